"""Key material: per-face key derivation, the encrypted keyfile, escrow of original pixels."""
