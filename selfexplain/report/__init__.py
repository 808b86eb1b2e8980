"""Reports read a run's results (schema: selfexplain.results): terminal and markdown tables
(tables), the self-contained HTML page (html_page) and run-to-run comparison (compare)."""
