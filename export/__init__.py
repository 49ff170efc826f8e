"""Export toolchain."""
