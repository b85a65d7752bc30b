"""The linear mixture model of Sections 3-4 (numpy only): minimum losses, the lemmas' bounds
and their checks, gradient-descent dynamics, and the figures of notebook 00."""
