"""The report: figures and one self-contained HTML (and Markdown) document."""
