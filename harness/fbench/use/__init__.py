"""What uses a stored run: predict, robustness, reproduce, bench."""
