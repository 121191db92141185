"""Quickstart: compress three retrieved passages for a question with the embedded default model."""

from gemfilter_rag import GemFilterCompressor

documents = [
    "The Eiffel Tower was completed in 1889 for the World's Fair. It is 330 metres tall.",
    "Bananas are berries, botanically speaking. Strawberries, on the other hand, are not.",
    "Gustave Eiffel's company designed and built the tower. Parisians first called it an eyesore.",
]
question = "When was the Eiffel Tower completed?"

compressor = GemFilterCompressor.from_pretrained()  # SmolLM2-135M-Instruct, offline after the first fetch
result = compressor.compress(documents, question, top_k=24)  # keep 24 tokens across all passages

print(
    f"{result.original_tokens} -> {result.compressed_tokens} tokens (x{result.ratio:.1f}), "
    f"filter layer {result.filter_layer}, {result.timings['total']:.2f}s"
)
for doc in result.documents:  # one entry per input passage, kept or not
    print(f"  [{doc.index}] kept {doc.kept_tokens}/{doc.original_tokens} tokens: {doc.text!r}")
print("context for the LLM:\n" + result.text)
