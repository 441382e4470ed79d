"""Instruct models: ChatML supervised fine-tuning (`tinylm sft`), the instruct tournament's
metric (`tinylm.eval.tasks.gsm8k_chat`) and the terminal chat (`tinylm chat`)."""
