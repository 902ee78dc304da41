"""The deploy component."""
