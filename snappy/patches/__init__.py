"""The model's patch grid on the page: each patch token's rectangle, per model family."""
