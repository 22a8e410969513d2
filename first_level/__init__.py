"""First-level fold models that write the standard prediction layout."""
