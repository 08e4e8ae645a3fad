"""Services: what the faces call. Each module is one concept."""
