"""Fixed texts of the model card: citations and the placeholder sections left for the author."""

from __future__ import annotations

CITATIONS = {
    "Sentence Transformers": """@inproceedings{reimers-2019-sentence-bert,
    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2019",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/1908.10084",
}""",
    "MultipleNegativesRankingLoss": """@misc{henderson2017efficient,
    title={Efficient Natural Language Response Suggestion for Smart Reply},
    author={Matthew Henderson and Rami Al-Rfou and Brian Strope and Yun-hsuan Sung and Laszlo Lukacs and """
    """Ruiqi Guo and Sanjiv Kumar and Balint Miklos and Ray Kurzweil},
    year={2017},
    eprint={1705.00652},
    archivePrefix={arXiv},
    primaryClass={cs.CL}
}""",
    "CachedMultipleNegativesRankingLoss": """@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}""",
    "MSELoss": """@inproceedings{reimers-2020-multilingual-sentence-bert,
    title = "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing",
    month = "11",
    year = "2020",
    publisher = "Association for Computational Linguistics",
    url = "https://arxiv.org/abs/2004.09813",
}""",
    "CoSENTLoss": """@online{kexuefm-8847,
    title={CoSENT: A more efficient sentence vector scheme than Sentence-BERT},
    author={Su Jianlin},
    year={2022},
    month={Jan},
    url={https://kexue.fm/archives/8847},
}""",
}

PLACEHOLDERS = {
    "out_of_scope": "*List how the model may foreseeably be misused and address what users ought not to do "
    "with the model.*",
    "bias": "*What are the known or foreseeable issues stemming from this model? You could also flag here "
    "known failure cases or weaknesses of the model.*",
    "recommendations": "*What are recommendations with respect to the foreseeable issues? For example, "
    "filtering explicit content.*",
    "glossary": "*Clearly define terms in order to be accessible across audiences.*",
    "authors": "*Lists the people who create the model card, providing recognition and accountability for "
    "the detailed work that goes into its construction.*",
    "contact": "*Provides a way for people who have updates to the Model Card, suggestions, or questions, "
    "to contact the Model Card authors.*",
}
