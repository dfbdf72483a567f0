"""The DICOM network layer: the only home of pynetdicom."""
