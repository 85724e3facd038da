"""What the demo department is made of: rooms, a CPT catalog, names, and clinical texts.

Plain data, read by :mod:`ris.demo`. The names mix Spanish, French and English patients
(accents, compound and hyphenated surnames, apostrophes) so that search, sorting and the
DICOM person names meet what a real front desk types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal

from ris.catalog import ProcedureData, RoomData

MIDNIGHT = time(0)


@dataclass(frozen=True)
class DemoRoom:
    """A room and the hours the front desk books routine outpatients into it."""

    data: RoomData
    booking_hours: tuple[int, int]  # local hours, [start, end)
    per_day: int  # routine bookings on a working day


ROOMS = (
    # CT1 is open day and night for the emergency department; outpatients 08:00-20:00.
    DemoRoom(
        RoomData(code="CT1", name="CT 1 (Siemens SOMATOM go.Top, 64 slices)", modality="CT",
                 ae_title="CT1_SOMATOM", station_name="CT1", opens_at=MIDNIGHT,
                 closes_at=MIDNIGHT, open_days="1234567"),
        booking_hours=(8, 20), per_day=14,
    ),
    DemoRoom(
        RoomData(code="MR1", name="MR 1 (Philips Ingenia 1.5 T)", modality="MR",
                 ae_title="MR1_INGENIA", station_name="MR1", opens_at=time(8, 0),
                 closes_at=time(21, 0), open_days="12345"),
        booking_hours=(8, 21), per_day=11,
    ),
    DemoRoom(
        RoomData(code="US1", name="Ultrasound 1 (GE LOGIQ E10)", modality="US",
                 ae_title="US1_LOGIQE10", station_name="US1", opens_at=time(8, 0),
                 closes_at=time(15, 0), open_days="12345"),
        booking_hours=(8, 15), per_day=10,
    ),
    DemoRoom(
        RoomData(code="CR1", name="X-ray 1 (Fujifilm FCR, bucky and wall stand)", modality="CR",
                 ae_title="CR1_FCR", station_name="CR1", opens_at=time(8, 0),
                 closes_at=time(20, 0), open_days="12345"),
        booking_hours=(8, 20), per_day=16,
    ),
)  # fmt: skip


@dataclass(frozen=True)
class DemoProcedure:
    """A catalog entry with what the demo needs to pick sensible patients for it."""

    data: ProcedureData
    contrast: bool = False  # iodinated (CT) or gadolinium (MR)
    sex: str | None = None  # only for patients of this sex
    reasons: tuple[tuple[str, str], ...] = ()  # (clinical question, ICD-10 code)
    emergency: bool = False  # the emergency department orders it day and night

    @property
    def ionising(self) -> bool:
        return self.data.modality in ("CT", "CR", "DX")


def _proc(
    code: str, description: str, modality: str, body_part: str, minutes: int, technical: str,
    professional: str, room: str, reasons: tuple[tuple[str, str], ...], **extra: object,
) -> DemoProcedure:  # fmt: skip
    data = ProcedureData(
        code_system="CPT", code=code, description=description, modality=modality,
        body_part=body_part, duration_minutes=minutes, technical_charge=Decimal(technical),
        professional_charge=Decimal(professional), room_codes=[room],
    )  # fmt: skip
    return DemoProcedure(data, reasons=reasons, **extra)  # type: ignore[arg-type]


CHEST_REASONS = (
    ("Cough and fever for five days", "R05"),
    ("Suspected pneumonia", "J18.9"),
    ("Shortness of breath", "R06.0"),
    ("Pre-operative assessment", "Z01.818"),
)
BACK_REASONS = (
    ("Low back pain for three months", "M54.5"),
    ("Sciatica, left leg", "M54.3"),
    ("Lumbar radiculopathy", "M54.16"),
)
KNEE_REASONS = (
    ("Knee pain after a fall", "M25.561"),
    ("Suspected meniscal tear", "S83.2"),
    ("Osteoarthritis follow-up", "M17.1"),
)
HEAD_REASONS = (
    ("Head trauma, fall at home", "S06.0"),
    ("Sudden severe headache", "R51"),
    ("Suspected stroke, left-sided weakness", "I63.9"),
)
ABDOMEN_REASONS = (
    ("Right upper quadrant pain", "R10.11"),
    ("Abnormal liver tests", "R94.5"),
    ("Suspected gallstones", "K80.2"),
    ("Abdominal pain, unspecified", "R10.9"),
)

PROCEDURES = (
    # X-ray (CR1)
    _proc("71045", "XR chest, 1 view", "CR", "CHEST", 10, "24.00", "9.00", "CR1", CHEST_REASONS),
    _proc("71046", "XR chest, 2 views", "CR", "CHEST", 10, "31.00", "10.00", "CR1", CHEST_REASONS),
    _proc("72040", "XR cervical spine, 2-3 views", "CR", "CSPINE", 15, "36.00", "11.00", "CR1",
          (("Neck pain", "M54.2"), ("Cervical spondylosis", "M47.812"))),
    _proc("72100", "XR lumbosacral spine, 2-3 views", "CR", "LSPINE", 15, "37.00", "11.00", "CR1",
          BACK_REASONS),
    _proc("73030", "XR shoulder, minimum 2 views", "CR", "SHOULDER", 10, "30.00", "9.00", "CR1",
          (("Shoulder pain, reduced abduction", "M25.511"), ("Fall on outstretched arm", "S42.0"))),
    _proc("73110", "XR wrist, minimum 3 views", "CR", "WRIST", 10, "32.00", "9.00", "CR1",
          (("Fall on outstretched hand", "S62.1"), ("Wrist pain", "M25.531"))),
    _proc("73130", "XR hand, minimum 3 views", "CR", "HAND", 10, "31.00", "9.00", "CR1",
          (("Rheumatoid arthritis follow-up", "M06.9"), ("Crush injury of finger", "S67.1"))),
    _proc("73502", "XR hip, unilateral, 2-3 views", "CR", "HIP", 10, "36.00", "10.00", "CR1",
          (("Hip pain on walking", "M25.551"), ("Osteoarthritis of hip", "M16.1"))),
    _proc("73562", "XR knee, 3 views", "CR", "KNEE", 10, "35.00", "10.00", "CR1", KNEE_REASONS),
    _proc("73610", "XR ankle, minimum 3 views", "CR", "ANKLE", 10, "31.00", "9.00", "CR1",
          (("Ankle sprain, inversion injury", "S93.4"), ("Ankle pain and swelling", "M25.571"))),
    _proc("74018", "XR abdomen, 1 view", "CR", "ABDOMEN", 10, "26.00", "9.00", "CR1",
          (("Suspected bowel obstruction", "K56.6"), ("Constipation", "K59.0"))),
    # CT (CT1)
    _proc("70450", "CT head/brain without contrast", "CT", "HEAD", 15, "115.00", "42.00", "CT1",
          HEAD_REASONS, emergency=True),
    _proc("70496", "CT angiography, head", "CT", "HEAD", 25, "265.00", "78.00", "CT1",
          (("Suspected stroke, left-sided weakness", "I63.9"), ("Aneurysm follow-up", "I67.1")),
          contrast=True, emergency=True),
    _proc("71250", "CT chest without contrast", "CT", "CHEST", 15, "140.00", "50.00", "CT1",
          (("Pulmonary nodule follow-up", "R91.1"), ("Interstitial lung disease", "J84.9"))),
    _proc("71260", "CT chest with contrast", "CT", "CHEST", 20, "170.00", "55.00", "CT1",
          (("Lung cancer staging", "C34.90"), ("Persistent opacity on chest X-ray", "R91.8")),
          contrast=True),
    _proc("71275", "CT angiography, chest (pulmonary embolism)", "CT", "CHEST", 20, "235.00",
          "70.00", "CT1",
          (("Suspected pulmonary embolism", "I26.9"), ("Pleuritic chest pain", "R07.1")),
          contrast=True, emergency=True),
    _proc("72131", "CT lumbar spine without contrast", "CT", "LSPINE", 15, "130.00", "47.00", "CT1",
          BACK_REASONS),
    _proc("74176", "CT abdomen and pelvis without contrast", "CT", "ABDOMENPELVIS", 15, "150.00",
          "60.00", "CT1", (("Renal colic", "N23"), ("Suspected kidney stone", "N20.0")),
          emergency=True),
    _proc("74177", "CT abdomen and pelvis with contrast", "CT", "ABDOMENPELVIS", 25, "215.00",
          "68.00", "CT1",
          (("Suspected appendicitis", "K35.80"), ("Colon cancer follow-up", "C18.9"),
           ("Abdominal pain, unspecified", "R10.9")),
          contrast=True, emergency=True),
    # MR (MR1)
    _proc("70551", "MRI brain without contrast", "MR", "BRAIN", 30, "230.00", "72.00", "MR1",
          (("Chronic headache", "R51"), ("Memory complaints", "R41.3"), ("Vertigo", "R42"))),
    _proc("70553", "MRI brain without and with contrast", "MR", "BRAIN", 45, "330.00", "95.00",
          "MR1", (("Multiple sclerosis follow-up", "G35"), ("Brain metastases staging", "C79.31")),
          contrast=True),
    _proc("72141", "MRI cervical spine without contrast", "MR", "CSPINE", 30, "225.00", "70.00",
          "MR1", (("Cervical radiculopathy", "M54.12"), ("Neck pain with arm numbness", "M50.1"))),
    _proc("72148", "MRI lumbar spine without contrast", "MR", "LSPINE", 30, "225.00", "70.00",
          "MR1", BACK_REASONS),
    _proc("73221", "MRI shoulder without contrast", "MR", "SHOULDER", 30, "240.00", "68.00", "MR1",
          (("Suspected rotator cuff tear", "M75.1"), ("Shoulder instability", "M25.311"))),
    _proc("73721", "MRI knee without contrast", "MR", "KNEE", 30, "240.00", "68.00", "MR1",
          KNEE_REASONS),
    _proc("74183", "MRI abdomen without and with contrast", "MR", "ABDOMEN", 45, "350.00", "98.00",
          "MR1",
          (("Liver lesion characterisation", "K76.89"), ("Pancreatic cyst follow-up", "K86.2")),
          contrast=True),
    # Ultrasound (US1)
    _proc("76700", "US abdomen, complete", "US", "ABDOMEN", 30, "95.00", "36.00", "US1",
          ABDOMEN_REASONS),
    _proc("76705", "US abdomen, limited", "US", "ABDOMEN", 20, "70.00", "27.00", "US1",
          ABDOMEN_REASONS),
    _proc("76536", "US soft tissues of head and neck (thyroid)", "US", "NECK", 20, "80.00", "29.00",
          "US1", (("Thyroid nodule", "E04.1"), ("Goitre follow-up", "E04.9"))),
    _proc("76856", "US pelvis, complete (non-obstetric)", "US", "PELVIS", 30, "90.00", "34.00",
          "US1", (("Pelvic pain", "R10.2"), ("Abnormal uterine bleeding", "N93.9")), sex="F"),
    _proc("76870", "US scrotum", "US", "SCROTUM", 20, "82.00", "30.00", "US1",
          (("Testicular pain", "N50.8"), ("Scrotal swelling", "N50.8")), sex="M"),
    _proc("93880", "Duplex scan, extracranial arteries (carotid), bilateral", "US", "NECK", 30,
          "150.00", "45.00", "US1",
          (("Carotid bruit", "R09.89"), ("Transient ischaemic attack", "G45.9"))),
    _proc("93970", "Duplex scan, lower extremity veins, bilateral", "US", "LEG", 30, "145.00",
          "44.00", "US1",
          (("Suspected deep vein thrombosis", "I80.2"), ("Leg swelling", "R60.0"))),
)  # fmt: skip


@dataclass(frozen=True)
class Culture:
    """Where a group of demo patients comes from: names, places, phones and insurers."""

    given_female: tuple[str, ...]
    given_male: tuple[str, ...]
    family: tuple[str, ...]
    cities: tuple[tuple[str, str, str], ...]  # city, postal code prefix, country
    streets: tuple[str, ...]
    phone: str  # a pattern: each # becomes a digit
    insurers: tuple[str, ...]
    weight: int
    compound_family: bool = False  # Spanish: two surnames, father's then mother's
    middle_names: bool = False  # English: some people give a middle name
    particles: tuple[str, ...] = field(default=())


SPANISH = Culture(
    given_female=("María", "Begoña", "Concepción", "Nuria", "Inmaculada", "Ángela", "Sofía",
                  "Lucía", "Mónica", "Pilar", "Rocío", "María José", "Ana Belén", "Itziar",
                  "Mercedes", "Carmen", "Dolores", "Ainhoa", "Elena", "Marta"),
    given_male=("José", "Íñigo", "Ramón", "Jesús", "Raúl", "Martín", "Álvaro", "Joaquín",
                "Andrés", "José Luis", "Juan Carlos", "Francisco Javier", "Sergio", "Óscar",
                "Rubén", "Adrián", "Jordi", "Xabier", "Manuel", "Tomás"),
    family=("Peña", "Núñez", "García", "Martínez", "López", "Fernández", "Gómez", "Sánchez",
            "Pérez", "Rodríguez", "Muñoz", "Jiménez", "Ibáñez", "Cañizares", "Ortiz", "Díaz",
            "Hernández", "Álvarez", "Castaño", "Ordóñez", "Yáñez", "Gutiérrez", "Domínguez",
            "Ruiz", "Vázquez", "Rubio", "Molina", "Serrano", "Echeverría", "Zúñiga"),
    cities=(("Madrid", "280", "Spain"), ("Barcelona", "080", "Spain"), ("Sevilla", "410", "Spain"),
            ("Valencia", "460", "Spain"), ("Bilbao", "480", "Spain"), ("A Coruña", "150", "Spain"),
            ("Zaragoza", "500", "Spain"), ("Málaga", "290", "Spain")),
    streets=("Calle Mayor {n}, {f}º", "Avenida de la Constitución {n}", "Calle de Alcalá {n}, {f}º",
             "Plaza de España {n}", "Calle Nueva {n}, bajo", "Paseo de la Castellana {n}, {f}º",
             "Calle del Río {n}"),
    phone="+34 6## ### ###",
    insurers=("SNS (Seguridad Social)", "SNS (Seguridad Social)", "Sanitas", "Adeslas",
              "DKV Seguros", "Mapfre Salud", "Asisa"),
    weight=50,
    compound_family=True,
    particles=("de la Fuente", "del Río", "de los Santos"),
)  # fmt: skip

FRENCH = Culture(
    given_female=("Gaëlle", "Hélène", "Zoé", "Anaïs", "Cécile", "Élodie", "Maëlys", "Thérèse",
                  "Marie-Claire", "Anne-Sophie", "Brigitte", "Céline", "Noémie", "Joséphine"),
    given_male=("François", "Jérôme", "Noël", "Benoît", "Stéphane", "Loïc", "René", "Jean-Pierre",
                "Jean-Baptiste", "Hervé", "Gaël", "Frédéric", "Mathéo", "Théo"),
    family=("Lefèvre", "Dubois", "Moreau", "Girard", "Leclerc", "Bérenger", "Mercier", "Rousseau",
            "Fournier", "Lemaître", "Chevalier", "Gauthier", "Faure", "Dupré", "Barthélemy",
            "Lévêque", "Le Goff", "d'Aubigné", "N'Diaye", "Bénard-Lacroix", "Bouchard"),
    cities=(("Lyon", "690", "France"), ("Toulouse", "310", "France"),
            ("Perpignan", "660", "France"), ("Bordeaux", "330", "France"),
            ("Paris", "750", "France"), ("Montpellier", "340", "France")),
    streets=("{n} rue de la République", "{n} allée des Tilleuls", "{n} boulevard Victor-Hugo",
             "{n} place du Marché", "{n} chemin des Écoliers"),
    phone="+33 6 ## ## ## ##",
    insurers=("CPAM", "CPAM", "MGEN", "Harmonie Mutuelle", "AXA France"),
    weight=25,
)  # fmt: skip

ENGLISH = Culture(
    given_female=("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Siobhan", "Chloe",
                  "Aoife", "Sarah", "Emily", "Margaret", "Charlotte"),
    given_male=("James", "Robert", "John", "Michael", "William", "Seán", "David", "Thomas",
                "Oliver", "George", "Patrick", "Daniel"),
    family=("Smith", "Johnson", "Williams", "Brown", "Jones", "O'Brien", "O'Connor", "McAllister",
            "Taylor", "Wilson", "Thompson", "Clarke", "Walsh", "Murphy", "Evans", "Hughes",
            "Ashworth", "Fitzgerald", "Smith-Jones"),
    cities=(("London", "SW1A", "United Kingdom"), ("Manchester", "M1", "United Kingdom"),
            ("Dublin", "D02", "Ireland"), ("Bristol", "BS1", "United Kingdom")),
    streets=("{n} Elm Grove", "{n} Station Road", "{n} Church Lane", "{n} Victoria Street"),
    phone="+44 7700 9#####",  # Ofcom's range kept for fiction
    insurers=("NHS", "NHS", "Bupa", "AXA Health", "Vhi Healthcare"),
    weight=25,
    middle_names=True,
)  # fmt: skip

CULTURES = (SPANISH, FRENCH, ENGLISH)

ORDERING_PHYSICIANS = (
    "Ortega^Lucía", "Santos^Miguel", "Vidal^Carmen", "Lambert^Hélène", "Roux^Olivier",
    "Patel^Anita", "Kennedy^Brian", "Navarro^Pablo", "Castillo^Elena", "Marchand^Luc",
)  # fmt: skip
EMERGENCY_PHYSICIANS = ("Urgencias^Guardia", "Herrera^Javier", "Duval^Nathalie")

ALLERGIES = ("Penicillin", "Latex", "Ibuprofen", "Shellfish", "Metamizole")
CONTRAST_ALLERGY_NOTES = (
    "Iodinated contrast: urticaria in 2019, premedication required",
    "Iodinated contrast: bronchospasm (2016)",
    "Gadolinium: nausea and rash",
)  # fmt: skip
MRI_CONDITIONAL_NOTES = (
    "MR-conditional pacemaker (Medtronic Azure, 2021): 1.5 T only, cardiology on site",
    "MR-conditional hip prosthesis",
    "MR-conditional spinal cord stimulator: switch off before scanning",
)  # fmt: skip
MRI_UNSAFE_NOTES = (
    "Cochlear implant (non MR-compatible)",
    "Metallic foreign body in the eye (welder)",
)  # fmt: skip
OTHER_ALERTS = (
    "eGFR 38 (chronic kidney disease stage 3b): check before contrast",
    "Diabetic on metformin",
    "Claustrophobic: may need sedation",
    "Wheelchair user: needs a hoist for transfer",
    "Hard of hearing",
    "Needs an interpreter (Arabic)",
)  # fmt: skip

CANCEL_REASONS = (
    "Patient called to cancel",
    "Ordering physician withdrew the request",
    "Duplicate request",
    "Patient admitted to another hospital",
    "Patient unwell, will call to rebook",
)  # fmt: skip
DISCONTINUE_REASONS = (
    "Patient claustrophobic, could not continue",
    "Contrast extravasation at the injection site",
    "Patient unable to lie still (pain)",
    "Vasovagal episode on the table",
)  # fmt: skip
