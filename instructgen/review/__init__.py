"""The curation review: a local web page to accept, reject, edit and export records."""
