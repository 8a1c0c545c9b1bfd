"""Report figures: matplotlib drawings of analysis results, saved through affectlens.store.atomic."""
