"""KFP components: thin typed wrappers, one per stage, calling `sidreasoner_core`."""
