"""Training: fine-tuning a zoo model on an ImageFolder data set, single process or DDP (:mod:`.finetune`)."""
