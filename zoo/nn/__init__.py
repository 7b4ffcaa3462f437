"""Network building blocks shared by architectures (torch only)."""
