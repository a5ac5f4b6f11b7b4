"""starscale: Spark data jobs and Horovod training for star-rating models on product reviews."""
__version__ = "0.1.0"
