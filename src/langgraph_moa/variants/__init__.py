"""The variants: what each layer fans out to, how a layer joins, and the final step."""
