"""Dataset discovery, image decode/encode, atomic files, journal and manifest."""
