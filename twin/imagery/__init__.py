"""Aerial imagery as an input: oriented frame cameras, their readers and their images."""
