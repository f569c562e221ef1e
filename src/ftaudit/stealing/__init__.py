"""Model extraction of fine-tuned models through their API: black box, identification, pruning."""
