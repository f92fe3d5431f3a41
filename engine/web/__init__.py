"""The member pages (`campaign serve`): a small server-rendered app, no JavaScript needed."""
