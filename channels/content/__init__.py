"""What a message says: content selection (variant, segment, tags), the product catalog."""
