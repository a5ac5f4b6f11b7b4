"""One module per pipeline stage, each with run(spark, cfg, force=False) -> summary dict."""
