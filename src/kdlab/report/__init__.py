"""Reports: terminal tables and plots, built from results.json / history.csv, never from text."""
