"""LSTM training with Horovod, split by concern (the train-lstm stage drives it):

- data: encode's token-id shards → a rank's batches and tf.data (no Spark)
- checkpoints: the checkpoint folder (state, epochs, best weights, final model, failures)
- watchdog: the stall watchdog and the failures training raises
- callbacks: the Keras callbacks of a rank
- hooks: the test hooks, in one place
- devices: the rank's GPU (Spark task resources / local rank), cuDNN eligibility, the driver off GPUs
- rank: RankArgs and train_rank, the per-rank function (device setup, restore, callbacks, fit)
- launch: the ranks' arguments, the spark / horovodrun / local launchers, the failure watch

Dependencies point one way: launch → rank → callbacks → checkpoints → storage; every module
reaches files through starscale.storage, none imports the hvd_train entry module.
"""
