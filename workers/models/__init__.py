"""Plain-PyTorch model definitions and weight loading."""
