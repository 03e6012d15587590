# Paper A (non-surjectivity) rules: enabled by `paperA: {enabled: true}` in the config (issue 3).
