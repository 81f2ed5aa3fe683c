"""Placeholder: this component arrives with its own issue."""
