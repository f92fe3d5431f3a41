"""Campaign Engine: mail-merge and lobbying campaigns for a union of school staff.

One sub-package per stage of the pipeline, imported downwards only (checked by
import-linter): members are imported (`members`), resolved to their MP and
employer (`lookup`), written to (`letters`), mailed (`mail`); replies come in
(`inbox`) and are followed up (`followup`); everything is kept in `store`. The
command line (`cli`) and the member pages (`web`) sit on top. See README.md,
"Where things are".
"""

__version__ = "0.1.0"
