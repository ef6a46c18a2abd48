"""The run store: where every file of a run goes, and reading a run back."""
