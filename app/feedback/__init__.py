"""Thumbs on replies: a user's rating of an assistant message, and the export of all ratings."""
