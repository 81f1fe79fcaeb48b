"""The micro family: a byte-level BPE tokenizer and Llama-style models trained offline on the training
splits of GSM8K, MBPP and MMLU, so collaboration can be studied across a span of model sizes on a CPU.

``corpus`` formats documents the way lm-eval presents them, ``tokenizer`` trains the shared tokenizer,
``family`` holds the model specs, ``train`` the resumable trainer, ``export`` the committed weights, the
``micro.yaml`` and the model card; ``fsgen_eval.cli.zoo`` adds ``fsgen-eval zoo train``.
"""
