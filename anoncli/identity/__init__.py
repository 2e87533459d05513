"""Identity encoders for the identity methods (IdentityDP, identity rotation; book ch. 5-6)."""
