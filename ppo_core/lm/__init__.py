"""The simulated language-model world (ch. 04): the review corpus, prompts and tokenizer
(`text`), the tiny GPT-2 built on them (`models`), the model cache (`cache`), and the gold
judge, simulated annotator and reward models (`reward`)."""
