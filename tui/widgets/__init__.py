"""Small reusable widgets: loss chart, epoch table, score bars, a lazily paged table."""
