"""Reports: the matrix table and JSON, guide 002's export_results and support table, CI costs, calibration curves."""
