"""The control-plane bundle: PKI, encryption config and tokens sealed beside each snapshot."""
