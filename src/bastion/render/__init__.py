"""One renderer per output format over the shared :class:`~bastion.findings.Report`."""
