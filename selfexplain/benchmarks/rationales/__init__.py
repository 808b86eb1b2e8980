"""The rationales benchmark."""
