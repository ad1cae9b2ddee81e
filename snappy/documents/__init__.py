"""What a document is and where it comes from: sources, rendering, the text layer, failures."""
