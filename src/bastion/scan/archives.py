"""Placeholder until this format scanner lands."""
