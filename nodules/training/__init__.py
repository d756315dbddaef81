"""Progressive training: the settings of a run and the loop that trains it."""
