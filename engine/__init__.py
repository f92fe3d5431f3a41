"""Campaign Engine: mail-merge and lobbying campaigns for a union of school staff.

The package follows the data flow: members are imported (`members`), resolved
to their MP and employer (`resolve`, using `postcodes_io`, `reps`, `schools`,
`employers`), and later stages build on what those stages stored.
"""

__version__ = "0.1.0"
