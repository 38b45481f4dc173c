"""Write a multi-instance CT series for the end-to-end test.

The shared test data has no multi-instance series, so this copies one real
CT image (../shared/testdata/dicom/modality/ct/CT_small.dcm) into COUNT
instances of one new study and series, and gives them the identity of the
Synthea patient the test pushes as FHIR: the residual scan of the packet
is then meaningful for the DICOM headers too. The identity is repeated
where real files carry it: Other Patient IDs and Names, the mother's birth
name, the address and telephone, the comments, and a private block.

Usage: /usr/bin/python3 make_series.py < spec.json
spec: {"base", "out", "count", "study_uid", "series_uid", "sop_uids": [...],
       "patient_name", "patient_id", "issuer", "birth_date", "sex",
       "other_ids": [...], "other_names", "mother_birth_name", "address",
       "phone", "comments"}
Uses Debian's python3-pydicom.
"""
import json
import os
import sys

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


def main():
    spec = json.load(sys.stdin)
    os.makedirs(spec["out"], exist_ok=True)
    for i in range(spec["count"]):
        ds = pydicom.dcmread(spec["base"])
        sop = spec["sop_uids"][i]
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = spec["study_uid"]
        ds.SeriesInstanceUID = spec["series_uid"]
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = ["-158.135803", "-179.035797", "%.6f" % (-75.7 - 5 * i)]
        ds.SliceLocation = "%.6f" % (-75.7 - 5 * i)
        ds.PatientName = spec["patient_name"]
        ds.PatientID = spec["patient_id"]
        ds.IssuerOfPatientID = spec["issuer"]
        ds.PatientBirthDate = spec["birth_date"]
        ds.PatientSex = spec["sex"]
        ds.PatientAddress = spec["address"]
        ds.PatientTelephoneNumbers = spec["phone"]
        ds.PatientMotherBirthName = spec["mother_birth_name"]
        ds.OtherPatientNames = spec["other_names"]
        ds.PatientComments = spec["comments"]
        items = []
        for value in spec["other_ids"]:
            it = Dataset()
            it.PatientID = value
            it.TypeOfPatientID = "TEXT"
            items.append(it)
        ds.OtherPatientIDsSequence = Sequence(items)
        # Some vendors repeat the identity in private attributes.
        blk = ds.private_block(0x0029, "E2E PRIVATE IDENTITY", create=True)
        blk.add_new(0x01, "LO", spec["patient_name"])
        blk.add_new(0x02, "LO", spec["patient_id"])
        blk.add_new(0x03, "DA", spec["birth_date"])
        ds.save_as(os.path.join(spec["out"], "%04d.dcm" % (i + 1)), write_like_original=False)


if __name__ == "__main__":
    main()
