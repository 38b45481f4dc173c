"""Print the DICOM JSON (PS3.18 F.2) of each file given, as pydicom makes it.

The dicom package's JSON tests compare EncodeJSON with this output for the
text attributes (character set conversion). Run with Debian's python3 and
python3-pydicom. Binary values become BulkDataURI "bulk" so that only text
and numbers are compared.
"""
import json
import sys

import pydicom

out = {}
for path in sys.argv[1:]:
    ds = pydicom.dcmread(path, force=True)
    out[path] = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda el: "bulk")
json.dump(out, sys.stdout)
