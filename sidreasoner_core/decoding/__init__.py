"""Decoding over the SID catalogue, shared by evaluation, the GRPO stage's curves and serving:
the compiled catalogue trie with constrained beam search (`constrained`), greedy/sampled
reasoning up to `</think>` (`thinking`), and the rollout-time constraint after `</think>`
(`thinking_constraint`)."""
