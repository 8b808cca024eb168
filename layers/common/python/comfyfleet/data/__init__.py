"""Data files shipped with the package (the recorded core node catalogue)."""
