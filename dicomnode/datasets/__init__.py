"""The validation half: turn what the node holds into datasets, and judge models on them.

::

    select.py      which series: typed conditions (as in rules), a spreadsheet list, UIDs
    deid.py        de-identification by the PS3.15 Annex E Basic Profile and its options
                   (pseudonyms.py: keyed pseudonyms and UIDs; deid_scrub.py: Clean
                   Descriptors; deid_tables.py: the option columns the library lacks)
    nifti.py       volumes as NIfTI (RAS affine from the DICOM geometry; 4-D for dynamic PET)
    images.py      8-bit PNG/JPEG/GIF slices of a preprocessed volume
    dynamic.py     a dynamic (multi-time-frame) PET series as one volume per time frame
    atomic.py      files written whole or not at all
    export.py      ``dicomnode export``: the above, a manifest, resumable
    evaluate.py    ``dicomnode evaluate``: a pipeline over a labelled set, metrics, report
      labelled_set.py        the manifest's rows (CSV or XLSX): series folder, label, reference
      metrics.py             AUC and its bootstrap CI, sensitivity ..., Dice, by subgroup
      seg_compare.py         a pipeline's SEG against a reference SEG, segment by segment
      evaluation_report.py   report.json (and read_report), beside report.html
      evaluation_html.py     report.html
      evaluation_figures.py  roc.png and calibration.png (matplotlib, Agg)

Nothing here runs inside the receiving node: these are tools an AI engineer or a
researcher runs beside it, on its index and spool, or on folders of DICOM files.
"""
