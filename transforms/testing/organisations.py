"""Seeded generator of free-text organisation records (companies and research affiliations).

Makes entities of two kinds, half each by default:

* **affiliations**: an academic unit of a university with its address, e.g. ``Department of Computer
  Science, University of Melbourne, Parkville VIC 3010, Australia``. Universities are drawn with
  Zipf-like weights and hold many units, so the hardest negatives are everywhere: other departments
  of the same university (``Department of Physics, University of Melbourne``), similar universities
  of one city (``University of Sydney`` / ``University of Technology Sydney``), one discipline at
  many universities.
* **companies**: a trading name and a legal suffix that fits the country (``Northern Star Resources
  Pty Ltd``, ``Zentrix Technologies GmbH``). A share of companies are families: a sibling that shares
  the core name but not the industry (``Northern Star Energy Pty Ltd``), or a subsidiary of the same
  name in another country with that country's suffix.

Every record is one free-text ``name`` and, unless turned off, ``city`` and ``country`` fields; no
person fields. Duplicates are corrupted with per-kind probabilities (see :class:`Corruption`):
reordered comma-separated parts (``University of Melbourne - Department of Computer Science``),
dropped and added parts, abbreviations (Univ./University, Dept/Department, Ltd/Limited, VIC/Victoria),
``&``/``and``, legal-suffix variants, punctuation and separator changes, case changes, typos, and city
or country spellings (München/Munich, USA/United States).

Two corpus shapes, as in :mod:`transforms.testing.people`: a *link* pair (A: one record per entity,
B: a corrupted duplicate of an ``overlap`` share of them plus unrelated organisations) and a *dedup*
corpus (clusters of 1-6 records per entity), each with its true pairs. Pure python/numpy, nothing is
read or downloaded, deterministic for a seed. The CLI writes csv, jsonl or parquet::

    python -m transforms.testing.organisations --mode dedup --entities 2600 --out DIR --seed 0

This is a test-data generator: the place names, postcodes and institutions are a small plausible
sample, not a gazetteer, and the invented company names are not meant to resemble real companies.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from transforms.testing.corruption import CorruptionRates
from transforms.testing.people import write_records, write_truth

__all__ = [
    "FIELDS",
    "MATCH_FIELDS",
    "KINDS",
    "Corruption",
    "Organisation",
    "make_organisations",
    "render",
    "make_link_corpora",
    "make_dedup_corpus",
    "main",
]

_LOGGER = logging.getLogger(__name__)

FIELDS = ("id", "name", "city", "country")
# The fields a matcher should embed (``name`` alone when the location fields are turned off).
MATCH_FIELDS = FIELDS[1:]

# ---------------------------------------------------------------------------------------------------
# Places: country -> (name, other spellings, address layout, cities). A city is
# "name|other spelling:region:postcode" (the other spelling and the region may be left out). Layouts: "us" =
# "City, RG 12345", "au" = "City RG 1234", "uk" = "City PC1 2AB", "eu" = "12345 City", "as" = "City 123".

_COUNTRIES = {
    "AU": ("Australia", ("AU", "Aust.", "Commonwealth of Australia"), "au", """
        Sydney::NSW:2006 Melbourne::VIC:3010 Brisbane::QLD:4072 Perth::WA:6009 Adelaide::SA:5005
        Hobart::TAS:7005 Canberra::ACT:2601 Newcastle::NSW:2308 Wollongong::NSW:2522
        Geelong::VIC:3220 Townsville::QLD:4811 Darwin::NT:0909 Parkville::VIC:3052
        Clayton::VIC:3800 Bundoora::VIC:3083 Armidale::NSW:2351"""),
    "US": ("USA", ("United States", "U.S.A.", "US", "United States of America"), "us", """
        Cambridge::MA:02139 Boston::MA:02115 New_York::NY:10027 Stanford::CA:94305
        Berkeley::CA:94720 Los_Angeles::CA:90095 Chicago::IL:60637 Seattle::WA:98195
        Austin::TX:78712 Pittsburgh::PA:15213 Ann_Arbor::MI:48109 Atlanta::GA:30332
        Madison::WI:53706 Houston::TX:77005 Baltimore::MD:21218 Princeton::NJ:08544
        Philadelphia::PA:19104 Columbus::OH:43210 Minneapolis::MN:55455 Denver::CO:80208
        San_Diego::CA:92093 Durham::NC:27708 Nashville::TN:37235 Salt_Lake_City::UT:84112"""),
    "GB": ("United Kingdom", ("UK", "U.K.", "GB", "Great Britain"), "uk", """
        Oxford:::OX1_3QD Cambridge:::CB3_0FD London:::WC1E_6BT Manchester:::M13_9PL
        Edinburgh:::EH8_9YL Glasgow:::G12_8QQ Birmingham:::B15_2TT Bristol:::BS8_1TH
        Leeds:::LS2_9JT Sheffield:::S10_2TN York:::YO10_5DD Nottingham:::NG7_2RD
        Southampton:::SO17_1BJ Cardiff:::CF10_3AT"""),
    "DE": ("Germany", ("Deutschland", "DE", "Federal Republic of Germany"), "eu", """
        Munich|München::80333 Berlin::10623 Hamburg::20146 Heidelberg::69117 Aachen::52062
        Karlsruhe::76131 Stuttgart::70569 Dresden::01069 Bonn::53113 Freiburg::79085
        Cologne|Köln::50923 Frankfurt::60323 Göttingen|Goettingen::37073"""),
    "FR": ("France", ("FR", "République française"), "eu", """
        Paris::75005 Lyon::69007 Grenoble::38000 Toulouse::31062 Marseille::13003 Lille::59000
        Bordeaux::33405 Strasbourg::67000 Nantes::44322 Montpellier::34095"""),
    "CA": ("Canada", ("CAN", "CDN"), "us", """
        Toronto::ON:M5S_1A1 Montreal|Montréal::QC:H3A_0G4 Vancouver::BC:V6T_1Z4
        Waterloo::ON:N2L_3G1 Ottawa::ON:K1N_6N5 Calgary::AB:T2N_1N4 Edmonton::AB:T6G_2R3
        Quebec_City|Québec::QC:G1V_0A6 Halifax::NS:B3H_4R2"""),
    "NL": ("The Netherlands", ("Netherlands", "NL", "Holland"), "eu", """
        Amsterdam::1098_XH Delft::2628_CD Utrecht::3584_CS Leiden::2333_CA Eindhoven::5612_AZ
        Groningen::9747_AG Rotterdam::3062_PA"""),
    "CH": ("Switzerland", ("Schweiz", "CH", "Suisse"), "eu", """
        Zurich|Zürich::8092 Geneva|Genève::1211 Lausanne::1015 Basel::4056 Bern|Berne::3012"""),
    "CN": ("China", ("P.R. China", "People's Republic of China", "PRC"), "as", """
        Beijing::100084 Shanghai::200433 Hangzhou::310027 Nanjing::210093 Wuhan::430072
        Guangzhou::510275 Hefei::230026 Chengdu::610065 Xi'an|Xian::710049 Harbin::150001"""),
    "JP": ("Japan", ("JP", "Nippon"), "as", """
        Tokyo::113-8654 Kyoto::606-8501 Osaka::565-0871 Sendai::980-8577 Nagoya::464-8601
        Fukuoka::819-0395 Sapporo::060-0808 Tsukuba::305-8577"""),
    "IT": ("Italy", ("Italia", "IT"), "eu", """
        Rome|Roma::00185 Milan|Milano::20133 Turin|Torino::10129 Bologna::40126
        Padua|Padova::35131 Pisa::56126 Naples|Napoli::80138 Florence|Firenze::50121"""),
    "NZ": ("New Zealand", ("NZ", "Aotearoa New Zealand"), "au", """
        Auckland::1010 Wellington::6140 Christchurch::8041 Dunedin::9016 Hamilton::3240
        Palmerston_North::4442"""),
    "IN": ("India", ("IN", "Republic of India"), "as", """
        Bangalore|Bengaluru::560012 Mumbai|Bombay::400076 New_Delhi|Delhi::110016
        Chennai|Madras::600036 Kanpur::208016 Kolkata|Calcutta::700032 Hyderabad::500032
        Pune::411007 Kharagpur::721302"""),
    "KR": ("South Korea", ("Republic of Korea", "Korea", "ROK"), "as", """
        Seoul::08826 Daejeon::34141 Pohang::37673 Busan::46241 Suwon::16419"""),
    "ES": ("Spain", ("España", "ES", "Espana"), "eu", """
        Madrid::28040 Barcelona::08034 Valencia::46022 Seville|Sevilla::41092 Granada::18071
        Salamanca::37008"""),
}
# Region code -> full name, per country (the address part writes either; WA is two places).
_REGIONS = {
    "AU": {"NSW": "New South Wales", "VIC": "Victoria", "QLD": "Queensland", "WA": "Western Australia",
           "SA": "South Australia", "TAS": "Tasmania", "ACT": "Australian Capital Territory",
           "NT": "Northern Territory"},
    "US": {"MA": "Massachusetts", "NY": "New York", "CA": "California", "IL": "Illinois", "TX": "Texas",
           "PA": "Pennsylvania", "MI": "Michigan", "GA": "Georgia", "WI": "Wisconsin", "MD": "Maryland",
           "NJ": "New Jersey", "OH": "Ohio", "MN": "Minnesota", "CO": "Colorado", "WA": "Washington",
           "NC": "North Carolina", "TN": "Tennessee", "UT": "Utah"},
    "CA": {"ON": "Ontario", "QC": "Quebec", "BC": "British Columbia", "AB": "Alberta",
           "NS": "Nova Scotia"},
}
# Universities named after people or places, by country (the rest are made from city names).
_NAMED_UNIVERSITIES = {
    "AU": "Monash Macquarie Deakin Curtin Flinders Griffith La_Trobe Charles_Sturt Bond James_Cook",
    "US": "Stanford Harvard Yale Princeton Cornell Duke Rice Emory Brown Purdue Vanderbilt "
          "Carnegie_Mellon Johns_Hopkins Tufts Northeastern Georgetown Drexel",
    "GB": "Durham Lancaster Brunel Aston Loughborough Cranfield Keele",
    "DE": "Humboldt Leibniz Ludwig_Maximilian Goethe Friedrich_Schiller",
    "FR": "Sorbonne Pierre_et_Marie_Curie Paris-Saclay Claude_Bernard",
    "CA": "McGill McMaster Simon_Fraser Concordia Dalhousie Queen's",
    "NL": "Erasmus Radboud Maastricht Tilburg",
    "CH": "Fribourg Lugano",
    "CN": "Tsinghua Peking Fudan Zhejiang Sun_Yat-sen Tongji",
    "JP": "Keio Waseda Tohoku Hokkaido Kyushu",
    "IT": "Bocconi Sapienza Ca'_Foscari",
    "NZ": "Massey Lincoln Victoria",
    "IN": "Jadavpur Anna Amity Manipal",
    "KR": "Yonsei Korea Hanyang Sungkyunkwan",
    "ES": "Complutense Pompeu_Fabra Carlos_III",
}
_DISCIPLINES = """
Computer_Science Mathematics Physics Chemistry Electrical_Engineering Mechanical_Engineering
Civil_Engineering Biological_Sciences Medicine Economics Statistics Psychology History Philosophy
Linguistics Earth_Sciences Computing_and_Information_Systems Information_Technology Business Law
Public_Health Nursing Pharmacy Architecture Music Education Political_Science Sociology Geography
Agriculture Veterinary_Science Materials_Science_and_Engineering Chemical_Engineering
Aerospace_Engineering Biomedical_Engineering Environmental_Science Applied_Mathematics
Pure_Mathematics Molecular_Biology Biochemistry Genetics Neuroscience Astronomy_and_Astrophysics
Oceanography Computer_Engineering Electrical_and_Computer_Engineering Mathematics_and_Statistics
Physics_and_Astronomy Information_Science Accounting_and_Finance Management Marketing
Anthropology Archaeology Classics English_Literature Mechanical_and_Aerospace_Engineering
Surgery Paediatrics Microbiology Immunology Pathology Physiology Pharmacology Ecology_and_Evolution
Plant_Sciences Food_Science Sport_and_Exercise_Science Industrial_Engineering Mining_Engineering
Computational_Science Data_Science Artificial_Intelligence Robotics Energy_Systems
"""
# Unit types with their weights; "X Department" and "Department of X" are the same unit.
_UNIT_TYPES = (("Department of", 0.45), ("School of", 0.2), ("Faculty of", 0.08), ("Centre for", 0.08),
               ("Institute of", 0.07), ("Laboratory for", 0.05), ("Division of", 0.04),
               ("Research Group in", 0.03))
# The parent faculty sometimes written in front of a unit: first discipline word -> faculty.
_FACULTIES = (
    ("Faculty of Engineering", "Engineering Computer Computing Electrical Mechanical Civil Chemical "
     "Aerospace Biomedical Materials Industrial Mining Robotics Energy Information Artificial Data"),
    ("Faculty of Science", "Mathematics Physics Chemistry Biological Statistics Earth Environmental "
     "Applied Pure Molecular Biochemistry Genetics Astronomy Oceanography Computational Ecology "
     "Plant Food Microbiology Neuroscience"),
    ("Faculty of Medicine and Health", "Medicine Public Nursing Pharmacy Surgery Paediatrics "
     "Immunology Pathology Physiology Pharmacology Veterinary Sport Psychology"),
    ("Faculty of Arts", "History Philosophy Linguistics Music Political Sociology Geography "
     "Anthropology Archaeology Classics English Education Architecture Agriculture"),
    ("Faculty of Business and Economics", "Economics Business Law Accounting Management Marketing"),
)

# Companies.
_DESCRIPTORS = """
Pacific Northern Southern Eastern Western Global United National Summit Apex Pinnacle Horizon
Evergreen Atlas Orion Phoenix Sterling Golden Silver Blue Red Green Royal Coastal Metro Central
Premier First Allied Consolidated General Standard Continental Advanced Precision Integrated
Dynamic Coral Granite Iron Crystal Liberty Frontier Harbour Heritage Meridian Keystone Landmark
Vanguard Beacon Cardinal Oak Cedar Maple Falcon Eagle Kestrel Lion Tiger Polar Arctic Alpine
"""
_SECONDS = "Star Ridge River Bay Peak Rock Valley Gate Lake Point Crest Field Stone Wood Bridge Sun"
_SURNAMES = """
Smith Walker Baker Mitchell Turner Campbell Edwards Morris Cooper Morgan Fraser Hamilton Henderson
Sullivan Gallagher Fitzgerald Harrison Lawson Sinclair Cartwright Pemberton Whitfield Ashworth
Langley Fairweather Blackwood Sheridan McKenzie Robertson Ferguson Murray Bennett Richardson
Kennedy Marshall Harper Spencer Foster Gibson Wallace Chapman Fletcher Hartmann Schneider Keller
Brandt Vogel Moreau Lefebvre Rossi Bianchi Conti Tanaka Suzuki Watanabe Chen Wang Zhang Patel Singh
Kumar Rao Kim Park Lee Nguyen Tran Garcia Lopez Navarro
"""
_SYLLABLES_A = "Zen Nov Cor Ver Al Tal Quan Ex Lum Sol Ax Bri Cy Dex Elo Fin Gal Hy Ion Ka Lex Mer Nex Ori"
_SYLLABLES_B = "tr ar al or en is iv on ex um ant ell av ir yn"
_SYLLABLES_C = "ix ia ex a o us on ica ara eon yx is um ent"
# Industry word(s), with a weight.
_INDUSTRIES = """
Mining:2 Resources:3 Energy:3 Logistics:3 Software:3 Systems:3 Technologies:4 Consulting:3
Engineering:3 Construction:2 Pharmaceuticals:2 Foods:2 Financial_Services:2 Capital:2 Insurance:2
Manufacturing:2 Motors:1 Chemicals:1 Textiles:1 Telecommunications:1 Media:2 Healthcare:2
Medical:1 Properties:2 Realty:1 Transport:2 Shipping:1 Steel:1 Electronics:2 Solutions:3
Analytics:2 Labs:1 Investments:2 Biotech:1 Security:1 Aviation:1 Agriculture:1 Packaging:1
Marine:1 Robotics:1 Devices:1 Materials:1 Retail:1 Wines:1 Brewing:1 Furniture:1 Printing:1
"""
_TAILS = (("Group", 0.35), ("Holdings", 0.2), ("International", 0.2), ("Partners", 0.1),
          ("Industries", 0.1), ("Worldwide", 0.05))
# Country -> (legal suffix, weight); every suffix has its spelling family in _SUFFIX_VARIANTS.
_LEGAL = {
    "AU": (("Pty Ltd", 0.6), ("Ltd", 0.3), ("Limited", 0.1)),
    "GB": (("Ltd", 0.6), ("Limited", 0.2), ("PLC", 0.2)),
    "US": (("Inc.", 0.5), ("LLC", 0.25), ("Corp.", 0.15), ("Corporation", 0.1)),
    "CA": (("Inc.", 0.6), ("Ltd.", 0.4)),
    "NZ": (("Limited", 0.7), ("Ltd", 0.3)),
    "DE": (("GmbH", 0.8), ("AG", 0.2)),
    "FR": (("S.A.", 0.5), ("SAS", 0.5)),
    "NL": (("B.V.", 0.8), ("N.V.", 0.2)),
    "CH": (("AG", 0.6), ("GmbH", 0.2), ("S.A.", 0.2)),
    "IT": (("S.p.A.", 0.5), ("S.r.l.", 0.5)),
    "JP": (("Co., Ltd.", 0.7), ("K.K.", 0.3)),
    "CN": (("Co., Ltd.", 1.0),),
    "IN": (("Pvt Ltd", 0.7), ("Ltd", 0.3)),
    "KR": (("Co., Ltd.", 1.0),),
    "ES": (("S.A.", 0.5), ("S.L.", 0.5)),
}
# How a legal suffix is also written ("" = left out).
_SUFFIX_VARIANTS = {
    "Pty Ltd": ("Pty. Ltd.", "Pty Limited", "Proprietary Limited", "PTY LTD", "P/L", ""),
    "Ltd": ("Ltd.", "Limited", "LTD", ""), "Ltd.": ("Ltd", "Limited", ""),
    "Limited": ("Ltd", "Ltd.", ""), "PLC": ("plc", "P.L.C.", "Public Limited Company", ""),
    "Inc.": ("Inc", "Incorporated", "INC", ""), "LLC": ("L.L.C.", "Limited Liability Company", ""),
    "Corp.": ("Corp", "Corporation", ""), "Corporation": ("Corp.", "Corp", ""),
    "GmbH": ("G.m.b.H.", "Gesellschaft mit beschränkter Haftung", ""),
    "AG": ("A.G.", "Aktiengesellschaft", ""), "S.A.": ("SA", "S.A", ""), "SAS": ("S.A.S.", ""),
    "B.V.": ("BV", "B.V", ""), "N.V.": ("NV", ""), "S.p.A.": ("SpA", "S.P.A.", ""),
    "S.r.l.": ("Srl", "S.R.L.", ""), "K.K.": ("KK", "Kabushiki Kaisha", ""),
    "Co., Ltd.": ("Co. Ltd.", "Co Ltd", "Company Limited", "Co., Limited", ""),
    "Pvt Ltd": ("Pvt. Ltd.", "Private Limited", "Pvt. Limited", ""), "S.L.": ("SL", "S.L", ""),
}
# Word -> other ways of writing it (both directions are applied: an abbreviation can be expanded).
_ABBREVIATIONS = {
    "University": ("Univ.", "Univ", "Uni"), "Department": ("Dept.", "Dept", "Dep."),
    "School": ("Sch.",), "Faculty": ("Fac.",), "Institute": ("Inst.", "Institut"),
    "Laboratory": ("Lab.", "Lab"), "Centre": ("Center", "Ctr."), "Division": ("Div.",),
    "Research": ("Res.",), "Science": ("Sci.", "Sciences"), "Sciences": ("Sci.", "Science"),
    "Engineering": ("Eng.", "Engg.", "Engin."), "Technology": ("Tech.", "Technol."),
    "Computer": ("Comp.",), "Computing": ("Comput.",), "Mathematics": ("Math.", "Maths"),
    "Physics": ("Phys.",), "Chemistry": ("Chem.",), "Electrical": ("Elec.", "Electr."),
    "Mechanical": ("Mech.",), "Information": ("Info.", "Inform."), "Medicine": ("Med.",),
    "Economics": ("Econ.",), "Statistics": ("Stat.", "Stats"), "Environmental": ("Env.", "Environ."),
    "Applied": ("Appl.",), "Management": ("Mgmt.", "Mgt."), "Business": ("Bus.",),
    "Psychology": ("Psych.",), "Political": ("Pol.",), "Technical": ("Tech.",),
    "Agriculture": ("Agric.",), "Astronomy": ("Astron.",), "Molecular": ("Mol.",),
    "Biomedical": ("Biomed.",), "Biological": ("Biol.",), "Systems": ("Sys.", "Syst."),
    "Services": ("Svcs.", "Serv."), "Manufacturing": ("Mfg.", "Mfg"), "Brothers": ("Bros.", "Bros"),
    "Associates": ("Assoc.", "Assocs"), "Holdings": ("Hldgs",), "Industries": ("Inds.",),
    "International": ("Intl.", "Int'l", "Intl"), "Group": ("Grp",), "Technologies": ("Tech.", "Techs"),
    "Pharmaceuticals": ("Pharma", "Pharm."), "Telecommunications": ("Telecom", "Telecoms"),
    "Financial": ("Fin.",), "Properties": ("Props",), "Investments": ("Invest.",),
    "Construction": ("Constr.",), "National": ("Natl.", "Nat."), "Polytechnic": ("Polytech.",),
    "Saint": ("St.",), "Mount": ("Mt.",), "Laboratories": ("Labs",),
}
_SHORT_OF: dict[str, set[str]] = {}
for _full, _shorts in _ABBREVIATIONS.items():
    for _short in _shorts:
        _SHORT_OF.setdefault(_short, set()).add(_full)
# Short form -> its one long form (ambiguous ones like "Tech." and long forms themselves are left out).
_EXPANSIONS = {short: next(iter(fulls)) for short, fulls in _SHORT_OF.items()
               if len(fulls) == 1 and short not in _ABBREVIATIONS}
del _full, _shorts, _short

# ---------------------------------------------------------------------------------------------------
# Entities.

_AFFILIATION, _COMPANY = "affiliation", "company"


@dataclasses.dataclass(frozen=True)
class Organisation:
    """One real-world organisation, as parts of its canonical written form.

    Attributes:
        kind: 'affiliation' or 'company'.
        parts: ``(role, words)`` pairs in canonical order. Affiliation roles: ``unit``
            (``Department of Physics``), ``univ``, ``address`` (city, region and postcode), ``country``;
            company roles: ``name`` and ``suffix`` (the legal suffix, may be absent).
        city: city as the ``city`` field writes it.
        country: country code (a key of the country table).
        faculty: affiliations: the parent faculty sometimes written after the unit, else ''.
        core: companies: the words a family of companies shares (``Northern Star``), else ().
    """

    kind: str
    parts: tuple[tuple[str, tuple[str, ...]], ...]
    city: str
    country: str
    faculty: str = ""
    core: tuple[str, ...] = ()

    def text(self) -> str:
        """The canonical one-line form (what an uncorrupted record's ``name`` holds)."""
        return render(self)


@dataclasses.dataclass(frozen=True)
class _City:
    name: str
    alias: str
    region: str
    postcode: str
    country: str


def _zipf(n: int, s: float = 1.0, offset: float = 2.0) -> np.ndarray:
    w = 1.0 / (np.arange(n) + offset) ** s
    return w / w.sum()


class _Tables:
    """The lists above, parsed once."""

    def __init__(self) -> None:
        self.cities: list[_City] = []
        for code, (_, _, _, spec) in _COUNTRIES.items():
            for item in spec.split():
                fields = item.split(":")
                name, _, alias = fields[0].partition("|")
                region, postcode = "".join(fields[1:-1]), fields[-1]
                self.cities.append(_City(name.replace("_", " "), alias.replace("_", " "), region,
                                         postcode.replace("_", " "), code))
        self.city_weights = _zipf(len(self.cities), s=0.6, offset=3.0)
        # Universities: (words, city). City-named forms first, then the named ones.
        self.universities: list[tuple[tuple[str, ...], _City]] = []
        by_country: dict[str, list[_City]] = {}
        for city in self.cities:
            by_country.setdefault(city.country, []).append(city)
        for city in self.cities:
            c = city.name.split()
            forms = [("University", "of", *c)]
            if len(self.universities) % 2 == 0:
                forms.append(("University", "of", "Technology", *c))
            if len(self.universities) % 3 == 0:
                forms.append((*c, "Institute", "of", "Technology"))
            if city.country == "US" and len(self.universities) % 4 == 1:
                forms.append((*c, "State", "University"))
            if city.country in ("DE", "CH", "NL", "ES", "IT") and len(self.universities) % 3 == 1:
                forms.append(("Technical", "University", "of", *c))
            self.universities.extend((f, city) for f in forms)
        for code, names in _NAMED_UNIVERSITIES.items():
            for i, name in enumerate(names.split()):
                city = by_country[code][i % len(by_country[code])]
                words = tuple(name.replace("_", " ").split())
                form = (*words, "College") if i % 7 == 6 else (*words, "University")
                self.universities.append((form, city))
        # Popularity must not follow the table's country order: a fixed shuffle first.
        order = np.random.default_rng(20261123).permutation(len(self.universities)).tolist()
        self.universities = [self.universities[i] for i in order]
        self.university_weights = _zipf(len(self.universities), s=0.7, offset=5.0)
        self.disciplines = [tuple(d.split("_")) for d in _DISCIPLINES.split()]
        self.discipline_weights = _zipf(len(self.disciplines), s=0.5)
        self.unit_types = [tuple(u.split()) for u, _ in _UNIT_TYPES]
        self.unit_weights = np.array([w for _, w in _UNIT_TYPES]) / sum(w for _, w in _UNIT_TYPES)
        self.faculty_of = {word: faculty for faculty, words in _FACULTIES for word in words.split()}
        self.descriptors = _DESCRIPTORS.split()
        self.seconds = _SECONDS.split()
        self.surnames = _SURNAMES.split()
        self.syllables = (_SYLLABLES_A.split(), _SYLLABLES_B.split(), _SYLLABLES_C.split())
        items = [x.rsplit(":", 1) for x in _INDUSTRIES.split()]
        self.industries = [tuple(w.split("_")) for w, _ in items]
        self.industry_weights = np.array([float(v) for _, v in items])
        self.industry_weights /= self.industry_weights.sum()
        self.countries = list(_COUNTRIES)
        self.country_weights = _zipf(len(self.countries), s=0.8, offset=1.5)
        self.cities_by_country = by_country


_TABLES: _Tables | None = None


def _tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _Tables()
    return _TABLES


def _pick(rng: np.random.Generator, seq: Sequence, p: np.ndarray | None = None):
    return seq[int(rng.choice(len(seq), p=p))] if p is not None else seq[int(rng.integers(len(seq)))]


def _weighted(rng: np.random.Generator, pairs: Sequence[tuple[str, float]]) -> str:
    w = np.array([x for _, x in pairs])
    return pairs[int(rng.choice(len(pairs), p=w / w.sum()))][0]


def _address(city: _City) -> tuple[str, ...]:
    layout = _COUNTRIES[city.country][2]
    name = tuple(city.name.split())
    region = (city.region,) if city.region else ()
    if layout in ("us", "au"):
        return (*name, *region, *city.postcode.split())
    if layout == "eu":
        return (*city.postcode.split(), *name)
    return (*name, *city.postcode.split())


def _affiliation(rng: np.random.Generator, t: _Tables) -> Organisation:
    words, city = _pick(rng, t.universities, t.university_weights)
    discipline = _pick(rng, t.disciplines, t.discipline_weights)
    unit_type = _pick(rng, t.unit_types, t.unit_weights)
    parts = (("unit", (*unit_type, *discipline)), ("univ", words), ("address", _address(city)),
             ("country", tuple(_COUNTRIES[city.country][0].split())))
    faculty = "" if unit_type[0] == "Faculty" else t.faculty_of.get(discipline[0], "")
    return Organisation(_AFFILIATION, parts, city.name, city.country, faculty)


def _brand(rng: np.random.Generator, t: _Tables) -> str:
    a, b, c = (_pick(rng, s) for s in t.syllables)
    return a + (b if rng.random() < 0.6 else "") + c


def _core(rng: np.random.Generator, t: _Tables) -> tuple[str, ...]:
    u = rng.random()
    if u < 0.3:
        return (_brand(rng, t),)
    if u < 0.55:
        first = _pick(rng, t.descriptors)
        return (first, _pick(rng, t.seconds)) if rng.random() < 0.5 else (first,)
    if u < 0.75:
        return (_pick(rng, t.surnames),)
    if u < 0.9:
        x, y = rng.choice(len(t.surnames), size=2, replace=False).tolist()
        return (t.surnames[x], "&", t.surnames[y])
    return (_pick(rng, t.surnames), "&", "Sons" if rng.random() < 0.6 else "Co.")


def _company(rng: np.random.Generator, t: _Tables, core: tuple[str, ...] | None = None,
             industry: tuple[str, ...] | None = None, country: str | None = None) -> Organisation:
    core = core or _core(rng, t)
    if industry is None:
        # Partnerships ("Smith & Sons") often carry no industry word; others almost always do.
        skip = 0.5 if "&" in core else 0.05
        industry = () if rng.random() < skip else _pick(rng, t.industries, t.industry_weights)
    name = (*core, *industry)
    country = country or _pick(rng, t.countries, t.country_weights)
    city = _pick(rng, t.cities_by_country[country])
    suffix = tuple(_weighted(rng, _LEGAL[country]).split())
    return Organisation(_COMPANY, (("name", name), ("suffix", suffix)), city.name, country, core=core)


def _stem(org: Organisation) -> str:
    """A company's name without a tail word: two companies of one country must differ here."""
    name = org.parts[0][1]
    return " ".join(name[:-1] if name[-1] in dict(_TAILS) else name).lower()


def _tail(rng: np.random.Generator, org: Organisation) -> Organisation:
    """The company with a tail word (Group, Holdings, ...) after its name."""
    (_, name), suffix = org.parts
    return dataclasses.replace(org, parts=(("name", (*name, _weighted(rng, _TAILS))), suffix))


def make_organisations(n: int, *, seed: int = 0, affiliation_share: float = 0.5,
                       family_share: float = 0.3) -> list[Organisation]:
    """``n`` distinct organisations.

    Args:
        n: how many.
        seed: seed of every draw.
        affiliation_share: share of research affiliations (the rest are companies), in [0, 1].
        family_share: share of companies that are a sibling of an earlier company (same core name,
            another industry) or a subsidiary of it in another country, in [0, 1].

    Returns:
        Organisations in generation order, no two with the same canonical text.

    Raises:
        ValueError: bad shares, or more affiliations asked for than the tables can make distinct.
    """
    if not 0.0 <= affiliation_share <= 1.0 or not 0.0 <= family_share <= 1.0:
        raise ValueError(f"shares must be in [0, 1], got {affiliation_share!r}, {family_share!r}")
    return _make_organisations(n, np.random.default_rng(seed), affiliation_share, family_share)


def _make_organisations(n: int, rng: np.random.Generator, affiliation_share: float,
                        family_share: float) -> list[Organisation]:
    t = _tables()
    out: list[Organisation] = []
    seen: set[str] = set()
    stems: set[tuple[str, str]] = set()
    companies: list[Organisation] = []
    misses = 0
    is_affiliation = (rng.random(n) < affiliation_share).tolist()
    for affiliation in is_affiliation:
        while True:
            if affiliation:
                org = _affiliation(rng, t)
            elif companies and rng.random() < family_share:
                base = companies[int(rng.integers(len(companies)))]
                if rng.random() < 0.6:  # sibling: same core, another industry, same country
                    org = _company(rng, t, core=base.core, country=base.country)
                else:  # subsidiary abroad: same name, that country's suffix
                    abroad = [c for c in t.countries if c != base.country]
                    org = dataclasses.replace(
                        _company(rng, t, core=base.parts[0][1], industry=(), country=_pick(rng, abroad)),
                        core=base.core)
            else:
                org = _company(rng, t)
                if rng.random() < 0.15:
                    org = _tail(rng, org)
            key = render(org).lower()
            stem = (_stem(org), org.country) if org.kind == _COMPANY else None
            if key not in seen and stem not in stems:
                break
            misses += 1
            if misses > 50 * n + 1000:
                raise ValueError(f"cannot make {n} distinct organisations with affiliation_share "
                                 f"{affiliation_share}: the built-in tables run out")
        seen.add(key)
        out.append(org)
        if stem is not None:
            stems.add(stem)
            companies.append(org)
    return out


# ---------------------------------------------------------------------------------------------------
# Rendering and corruption.

KINDS = ("reorder", "drop_part", "extra_part", "abbreviation", "ampersand", "legal_suffix",
         "location", "punctuation", "case", "typo")


@dataclasses.dataclass(frozen=True)
class Corruption(CorruptionRates):
    """How duplicates are corrupted: per-kind probabilities and bounds on modifications per record.

    Kinds are drawn independently per record among those that can apply to it (``legal_suffix`` needs
    a company with a suffix, ``ampersand`` an ``&`` or ``and``, ...); a record that drew fewer than
    ``min_per_record`` gets more (weighted by the probabilities), one that drew more than
    ``max_per_record`` keeps a random subset. With the defaults a duplicate has about 2.5.

    Attributes:
        reorder: the parts change order: the university first (``University of Melbourne, Department
            of ...``), all parts reversed, or the unit inverted (``Physics Department``); companies:
            the location written first (``Sydney - Walker Engineering``).
        drop_part: a part left out: address, postcode or country of an affiliation, a company's
            ``The`` or tail word (Group, Holdings, ...).
        extra_part: a part added: the parent faculty of a unit, a company's city or country
            (``Walker Engineering Pty Ltd (Australia)``), ``The`` before a company.
        abbreviation: one or two words abbreviated or expanded (University -> Univ., Dept. ->
            Department, VIC -> Victoria).
        ampersand: ``&`` <-> ``and``.
        legal_suffix: the legal suffix respelt or left out (Pty Ltd -> Proprietary Limited, Inc.
            -> Incorporated, Ltd -> '').
        location: the city or country written another way (München, United States, in the name and
            the fields), or the ``city`` / ``country`` field left empty.
        punctuation: another separator between parts (`` - ``, ``;``, ``/``, none), periods or
            commas removed, the country in parentheses.
        case: the whole name in UPPER, lower or Title case.
        typo: one character substituted (a keyboard neighbour), inserted, deleted or two swapped, in
            the name (mostly) or the city.
        min_per_record: fewest modifications of a record.
        max_per_record: most modifications of a record.
    """

    reorder: float = 0.3
    drop_part: float = 0.3
    extra_part: float = 0.15
    abbreviation: float = 0.4
    ampersand: float = 0.5
    legal_suffix: float = 0.4
    location: float = 0.2
    punctuation: float = 0.35
    case: float = 0.15
    typo: float = 0.3
    min_per_record: int = 1
    max_per_record: int = 5

    KINDS: ClassVar[tuple[str, ...]] = KINDS


@dataclasses.dataclass
class _Draft:
    """A record being corrupted: parts (role, words), the separator, flags, and the location fields."""

    org: Organisation
    parts: list[tuple[str, list[str]]]
    sep: str = ", "
    suffix_sep: str = " "
    paren_last: bool = False
    no_periods: bool = False
    no_commas: bool = False
    case: str = ""
    city: str = ""
    country: str = ""
    typo: tuple[str, float, float, float] | None = None  # (target, u_word, u_kind, u_pos)

    def roles(self) -> list[str]:
        return [r for r, _ in self.parts]


def _draft(org: Organisation) -> _Draft:
    return _Draft(org, [(r, list(w)) for r, w in org.parts], city=org.city,
                  country=_COUNTRIES[org.country][0])


def _render_draft(d: _Draft) -> str:
    chunks: list[str] = []
    for role, words in d.parts:
        if not words:
            continue
        text = " ".join(words)
        if role == "suffix" and chunks:
            chunks[-1] = chunks[-1] + d.suffix_sep + text
        else:
            chunks.append(text)
    if d.paren_last and len(chunks) > 1:
        last = chunks.pop()
        chunks[-1] = f"{chunks[-1]} ({last})"
    text = d.sep.join(chunks)
    if d.no_periods:
        text = text.replace(".", "")
    if d.no_commas:
        text = text.replace(",", "")
    if d.case == "upper":
        text = text.upper()
    elif d.case == "lower":
        text = text.lower()
    elif d.case == "title":
        text = text.title()
    if d.typo is not None and d.typo[0] == "name":
        text = _typo(text, *d.typo[1:])
    return re.sub(r" {2,}", " ", text).strip()


def render(org: Organisation) -> str:
    """The canonical text of an organisation (parts joined with ', ', the suffix after the name)."""
    return _render_draft(_draft(org))


_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEY_POS = {ch: (r, c) for r, row in enumerate(_KEYBOARD) for c, ch in enumerate(row)}


def _neighbour(ch: str, u: float) -> str:
    low = ch.lower()
    if low not in _KEY_POS:
        return ch
    r, c = _KEY_POS[low]
    options = [_KEYBOARD[rr][cc] for rr, cc in ((r, c - 1), (r, c + 1), (r - 1, c), (r + 1, c))
               if 0 <= rr < 3 and 0 <= cc < len(_KEYBOARD[rr])]
    new = options[min(int(u * len(options)), len(options) - 1)]
    return new.upper() if ch.isupper() else new


def _typo(text: str, u_word: float, u_kind: float, u_pos: float) -> str:
    """One typo in a word of 4+ letters (first letter kept: people rarely mistype it)."""
    words = [m for m in re.finditer(r"[^\W\d_]{4,}", text)]
    if not words:
        return text
    m = words[min(int(u_word * len(words)), len(words) - 1)]
    w = m.group()
    i = 1 + min(int(u_pos * (len(w) - 2)), len(w) - 3)  # 1 .. len-2
    if u_kind < 0.35:
        new = w[:i] + _neighbour(w[i], u_pos * 7 % 1) + w[i + 1:]
    elif u_kind < 0.55:
        new = w[:i] + _neighbour(w[i], u_pos * 5 % 1) + w[i:]
    elif u_kind < 0.8:
        new = w[:i] + w[i + 1:]
    else:
        new = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return text[:m.start()] + new + text[m.end():]


# Each corruption: (draft, rng) -> changed?  ``eligible`` says whether it can apply at all.


def _part(d: _Draft, role: str) -> int:
    return next((i for i, (r, _) in enumerate(d.parts) if r == role), -1)


def _where(d: _Draft, rng: np.random.Generator) -> list[str]:
    """A company's city or country, as words to add to its name."""
    return (d.org.city if rng.random() < 0.6 else _COUNTRIES[d.org.country][0]).split()


def _can_reorder(d: _Draft) -> bool:
    return d.org.kind == _COMPANY or len(d.parts) >= 2


def _c_reorder(d: _Draft, rng: np.random.Generator) -> bool:
    if d.org.kind == _COMPANY:
        loc = _part(d, "location")
        if loc < 0:
            d.parts.append(("location", _where(d, rng)))
            loc = len(d.parts) - 1
        d.parts.insert(0, d.parts.pop(loc))
        d.sep = " - " if rng.random() < 0.5 else ", "
        return True
    u = rng.random()
    unit, univ = _part(d, "unit"), _part(d, "univ")
    if u < 0.55 and 0 <= unit < univ:  # the university first, most common in the wild
        d.parts.insert(0, d.parts.pop(univ))
        if rng.random() < 0.4:
            d.sep = " - "
        return True
    if u < 0.75 and unit >= 0:  # "Department of Physics" -> "Physics Department"
        words = d.parts[unit][1]
        k = 2 if len(words) > 2 and words[1] in ("of", "for", "in") else 0
        if k:
            d.parts[unit] = ("unit", [*words[k:], words[0]])
            return True
    before = d.roles()
    d.parts.reverse()
    return d.roles() != before


def _can_drop(d: _Draft) -> bool:
    if d.org.kind == _AFFILIATION:
        return any(r in ("address", "country") for r in d.roles())
    name = d.parts[_part(d, "name")][1]
    return name[0] == "The" or name[-1] in dict(_TAILS) or _part(d, "location") >= 0


def _c_drop_part(d: _Draft, rng: np.random.Generator) -> bool:
    if d.org.kind == _AFFILIATION:
        options = [i for i, r in enumerate(d.roles()) if r in ("address", "country")]
        if not options:
            return False
        i = options[int(rng.integers(len(options)))]
        role, words = d.parts[i]
        if role == "address" and rng.random() < 0.4:
            postcode = _city_of(d.org).postcode.split()
            kept = [w for w in words if w not in postcode]
            if kept != words:
                d.parts[i] = (role, kept)
                return True
        del d.parts[i]
        return True
    loc = _part(d, "location")
    if loc >= 0:
        del d.parts[loc]
        return True
    i = _part(d, "name")
    name = d.parts[i][1]
    if name[0] == "The":
        d.parts[i] = ("name", name[1:])
        return True
    if name[-1] in dict(_TAILS):
        d.parts[i] = ("name", name[:-1])
        return True
    return False


def _city_of(org: Organisation) -> _City:
    return next(c for c in _tables().cities_by_country[org.country] if c.name == org.city)


def _can_extra(d: _Draft) -> bool:
    if d.org.kind == _AFFILIATION:
        return bool(d.org.faculty) and _part(d, "faculty") < 0
    return True


def _c_extra_part(d: _Draft, rng: np.random.Generator) -> bool:
    if d.org.kind == _AFFILIATION:
        if not d.org.faculty or _part(d, "faculty") >= 0:
            return False
        unit = _part(d, "unit")
        d.parts.insert(unit + 1 if unit >= 0 else 0, ("faculty", d.org.faculty.split()))
        return True
    i = _part(d, "name")
    name = d.parts[i][1]
    u = rng.random()
    if u < 0.25 and name[0] != "The" and "&" not in name:
        d.parts[i] = ("name", ["The", *name])
        return True
    if _part(d, "location") >= 0:
        return False
    d.parts.append(("location", _where(d, rng)))
    d.paren_last = rng.random() < 0.5
    return True


def _abbreviable(d: _Draft) -> list[tuple[int, int]]:
    regions = _REGIONS.get(d.org.country, {})
    return [(i, j) for i, (role, words) in enumerate(d.parts) if role != "suffix"
            for j, w in enumerate(words)
            if w in _ABBREVIATIONS or w in _EXPANSIONS or (role == "address" and w in regions)]


def _c_abbreviation(d: _Draft, rng: np.random.Generator) -> bool:
    spots = _abbreviable(d)
    if not spots:
        return False
    n = 1 if len(spots) == 1 or rng.random() < 0.6 else 2
    for k in rng.choice(len(spots), size=n, replace=False).tolist():
        i, j = spots[k]
        role, words = d.parts[i]
        w = words[j]
        if role == "address" and w in _REGIONS.get(d.org.country, {}):
            words[j] = _REGIONS[d.org.country][w]  # one word slot holding "New South Wales"
            continue
        if w in _ABBREVIATIONS:
            words[j] = _pick(rng, _ABBREVIATIONS[w])
        else:
            words[j] = _EXPANSIONS[w]
    return True


def _can_ampersand(d: _Draft) -> bool:
    return any(w in ("&", "and") for _, words in d.parts for w in words)


def _c_ampersand(d: _Draft, rng: np.random.Generator) -> bool:
    changed = False
    for i, (role, words) in enumerate(d.parts):
        new = ["and" if w == "&" else "&" if w == "and" else w for w in words]
        if new != words:
            d.parts[i] = (role, new)
            changed = True
    return changed


def _can_suffix(d: _Draft) -> bool:
    i = _part(d, "suffix")
    return i >= 0 and " ".join(d.parts[i][1]) in _SUFFIX_VARIANTS


def _c_legal_suffix(d: _Draft, rng: np.random.Generator) -> bool:
    i = _part(d, "suffix")
    if i < 0:
        return False
    current = " ".join(d.parts[i][1])
    variants = _SUFFIX_VARIANTS.get(current)
    if not variants:
        return False
    new = _pick(rng, variants)
    d.parts[i] = ("suffix", new.split())
    if new and current.startswith(("Inc", "Ltd")) and rng.random() < 0.3:
        d.suffix_sep = ", "  # "Walker Engineering, Inc."
    return True


def _c_location(d: _Draft, rng: np.random.Generator) -> bool:
    code = d.org.country
    name, others, _, _ = _COUNTRIES[code]
    city = _city_of(d.org)
    u = rng.random()
    if u < 0.4:  # the country spelt another way, in the name and the field
        new = _pick(rng, others)
        i = _part(d, "country")
        if i >= 0:
            d.parts[i] = ("country", new.split())
        if d.country:
            d.country = new
        return True
    if u < 0.6 and city.alias:
        for i, (role, words) in enumerate(d.parts):
            text = " ".join(words)
            if city.name in text:
                d.parts[i] = (role, text.replace(city.name, city.alias).split())
        if d.city:
            d.city = city.alias
        return True
    if u < 0.8 and d.city:
        d.city = ""
        return True
    if d.country:
        d.country = ""
        return True
    return False


def _c_punctuation(d: _Draft, rng: np.random.Generator) -> bool:
    u = rng.random()
    n_parts = sum(1 for r, w in d.parts if w and r != "suffix")
    if u < 0.45 and n_parts >= 2:
        d.sep = _pick(rng, (" - ", "; ", " / ", " ", ",", " | ", " -- "))
        return True
    if u < 0.7:
        text = _render_draft(d)
        if "." in text:
            d.no_periods = True
            return True
    if u < 0.85 and n_parts >= 3:
        d.paren_last = True
        return True
    text = _render_draft(d)
    if "," in text:
        d.no_commas = True
        return True
    if n_parts >= 2 and d.sep == ", ":
        d.sep = " - "
        return True
    if "." in text:
        d.no_periods = True
        return True
    return False


def _c_case(d: _Draft, rng: np.random.Generator) -> bool:
    d.case = _pick(rng, ("upper", "lower", "title"))
    before = _render_draft(dataclasses.replace(d, case=""))
    return _render_draft(d) != before


def _c_typo(d: _Draft, rng: np.random.Generator) -> bool:
    target = "city" if d.city and rng.random() < 0.15 else "name"
    u = rng.random(3).tolist()
    if target == "city":
        new = _typo(d.city, *u)
        if new == d.city:
            return False
        d.city = new
        return True
    d.typo = ("name", *u)
    return True


_APPLY = {"reorder": _c_reorder, "drop_part": _c_drop_part, "extra_part": _c_extra_part,
          "abbreviation": _c_abbreviation, "ampersand": _c_ampersand,
          "legal_suffix": _c_legal_suffix, "location": _c_location,
          "punctuation": _c_punctuation, "case": _c_case, "typo": _c_typo}
_ELIGIBLE = {"reorder": _can_reorder, "drop_part": _can_drop, "extra_part": _can_extra,
             "abbreviation": lambda d: bool(_abbreviable(d)), "ampersand": _can_ampersand,
             "legal_suffix": _can_suffix, "location": lambda d: True,
             "punctuation": lambda d: True, "case": lambda d: True, "typo": lambda d: True}


def _corrupt(org: Organisation, rng: np.random.Generator, corruption: Corruption,
             location_fields: bool) -> tuple[dict[str, str], tuple[str, ...]]:
    """One record of ``org``: ``({name, city, country}, kinds applied)``."""
    d = _draft(org)
    if not location_fields:
        d.city = d.country = ""
    p = corruption.probabilities()
    eligible = np.array([_ELIGIBLE[k](d) for k in KINDS])
    drawn = (rng.random(len(KINDS)) < p) & eligible
    n = int(drawn.sum())
    if n < corruption.min_per_record:
        rest = np.flatnonzero(eligible & ~drawn & (p > 0))
        if rest.size:
            w = p[rest] / p[rest].sum()
            extra = rng.choice(rest, size=min(corruption.min_per_record - n, rest.size), replace=False,
                               p=w)
            drawn[extra] = True
    elif n > corruption.max_per_record:
        keep = rng.choice(np.flatnonzero(drawn), size=corruption.max_per_record, replace=False)
        drawn[:] = False
        drawn[keep] = True
    applied = []
    for k in np.flatnonzero(drawn).tolist():  # KINDS order: structure first, then the surface
        before = (_render_draft(d), d.city, d.country)
        if _APPLY[KINDS[k]](d, rng) and (_render_draft(d), d.city, d.country) != before:
            applied.append(KINDS[k])
    record = {"name": _render_draft(d)}
    if location_fields:
        record["city"], record["country"] = d.city, d.country
    return record, tuple(applied)


def corrupt(orgs: Sequence[Organisation], *, seed: int = 0, corruption: Corruption | None = None,
            location_fields: bool = True) -> tuple[list[dict[str, str]], list[tuple[str, ...]]]:
    """One corrupted record per organisation, and the kinds applied to each.

    Returns:
        ``(records, kinds)``: dicts with ``name`` (and ``city``, ``country`` when ``location_fields``),
        in input order, and per record the kinds that changed it, in application order.
    """
    rng = np.random.default_rng(seed)
    corruption = corruption or Corruption()
    out = [_corrupt(o, rng, corruption, location_fields) for o in orgs]
    return [r for r, _ in out], [k for _, k in out]


# ---------------------------------------------------------------------------------------------------
# Corpora.


def _light(corruption: Corruption, noise: float) -> Corruption:
    return corruption.scaled(noise, min_per_record=0)


def _with_ids(records: list[dict], prefix: str, rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Ids ``prefix-000123`` in random order; returns (records sorted by id, ids in input order)."""
    n = len(records)
    width = max(6, len(str(max(n - 1, 0))))
    perm = rng.permutation(n).tolist()
    ids = [f"{prefix}-{k:0{width}d}" for k in perm]
    ordered: list[dict] = [{} for _ in range(n)]
    for rec, rid, k in zip(records, ids, perm, strict=True):
        ordered[k] = {"id": rid, **rec}
    return ordered, ids


def make_link_corpora(n_entities: int, *, overlap: float = 1.0, seed: int = 0,
                      corruption: Corruption | None = None, a_noise: float = 0.1,
                      location_fields: bool = True, affiliation_share: float = 0.5,
                      ) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """Two corpora of organisation records to link, and the true links.

    Corpus A holds one lightly corrupted record per organisation (``a_noise`` times the rates, no
    minimum); corpus B ``n_entities`` records too: a corrupted record of a random ``overlap`` share of
    A's organisations, and corrupted records of other organisations (drawn from the same tables, so
    many are hard negatives of A's) for the rest.

    Returns:
        ``(a_records, b_records, links)``: records are dicts ``id, name[, city, country]`` sorted by
        ``id`` (``a-000123``, ``b-000456``, assigned in random order); links ``(a_id, b_id)``, sorted.
    """
    if n_entities < 0:
        raise ValueError(f"n_entities must be >= 0, got {n_entities}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap!r}")
    rng = np.random.default_rng(seed)
    corruption = corruption or Corruption()
    n_dup = int(round(overlap * n_entities))
    orgs = _make_organisations(n_entities + n_entities - n_dup, rng, affiliation_share, 0.3)
    dup_of = np.sort(rng.choice(n_entities, size=n_dup, replace=False)).tolist()
    light = _light(corruption, a_noise)
    a = [_corrupt(o, rng, light, location_fields)[0] for o in orgs[:n_entities]]
    b_orgs = [orgs[i] for i in dup_of] + orgs[n_entities:]
    b = [_corrupt(o, rng, corruption, location_fields)[0] for o in b_orgs]
    a, a_ids = _with_ids(a, "a", rng)
    b, b_ids = _with_ids(b, "b", rng)
    links = sorted((a_ids[i], b_ids[j]) for j, i in enumerate(dup_of))
    return a, b, links


# Cluster sizes with weights halving at each step, as in transforms.testing.people.
_CLUSTER_DECAY = 0.5


def make_dedup_corpus(n_entities: int, *, seed: int = 0, min_size: int = 1, max_size: int = 6,  # noqa: PLR0913 - generator knobs
                      cluster_decay: float = _CLUSTER_DECAY, corruption: Corruption | None = None,
                      a_noise: float = 0.1, location_fields: bool = True,
                      affiliation_share: float = 0.5) -> tuple[list[dict], list[tuple[str, str]]]:
    """One corpus with clusters of organisation records, and the true duplicate pairs.

    Each organisation gets ``min_size..max_size`` records (each size ``cluster_decay`` times as likely
    as the one before; with the defaults about 1.9 records per organisation): one lightly corrupted
    original and corrupted duplicates.

    Returns:
        ``(records, pairs)``: records are dicts ``id, name[, city, country], entity_id`` (``o-000123``;
        the answer, not a feature) sorted by ``id`` (``r-000123``, random order); pairs are all
        within-cluster ``(id1, id2)`` with ``id1 < id2``, sorted.
    """
    if n_entities < 0:
        raise ValueError(f"n_entities must be >= 0, got {n_entities}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if not cluster_decay > 0:
        raise ValueError(f"cluster_decay must be > 0, got {cluster_decay!r}")
    rng = np.random.default_rng(seed)
    corruption = corruption or Corruption()
    orgs = _make_organisations(n_entities, rng, affiliation_share, 0.3)
    sizes_all = np.arange(min_size, max_size + 1)
    p = cluster_decay ** (sizes_all - min_size)
    sizes = rng.choice(sizes_all, size=n_entities, p=p / p.sum())
    light = _light(corruption, a_noise)
    records = [_corrupt(o, rng, light, location_fields)[0] for o in orgs]
    entity = list(range(n_entities))
    dup_entity = np.repeat(np.arange(n_entities), sizes - 1).tolist()
    records += [_corrupt(orgs[e], rng, corruption, location_fields)[0] for e in dup_entity]
    entity += dup_entity
    width = max(6, len(str(max(n_entities - 1, 0))))
    for rec, e in zip(records, entity, strict=True):
        rec["entity_id"] = f"o-{e:0{width}d}"
    records, ids = _with_ids(records, "r", rng)
    members: dict[int, list[str]] = {}
    for e, rid in zip(entity, ids, strict=True):
        members.setdefault(e, []).append(rid)
    pairs = sorted((x, y) for group in members.values() for x in group for y in group if x < y)
    return records, pairs


# ---------------------------------------------------------------------------------------------------
# CLI.

_FORMATS = ("csv", "jsonl", "parquet")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transforms.testing.organisations",
        description="Writes synthetic organisation corpora (companies, research affiliations) and "
        "their ground truth.")
    parser.add_argument("--mode", choices=("link", "dedup"), required=True,
                        help="link: DIR/a.FMT, DIR/b.FMT; dedup: DIR/organisations.FMT; both with "
                        "DIR/true_pairs.csv.")
    parser.add_argument("--entities", type=int, required=True, help="Number of organisations.")
    parser.add_argument("--out", required=True, help="Output directory (created if missing).")
    parser.add_argument("--format", choices=_FORMATS, default="csv",
                        help="Record file format. Default csv.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed. Default 0.")
    parser.add_argument("--overlap", type=float, default=1.0,
                        help="Link mode: share of A's organisations duplicated in B. Default 1.0.")
    parser.add_argument("--min_size", type=int, default=1,
                        help="Dedup mode: smallest cluster. Default 1.")
    parser.add_argument("--max_size", type=int, default=6,
                        help="Dedup mode: largest cluster. Default 6.")
    parser.add_argument("--cluster_decay", type=float, default=_CLUSTER_DECAY,
                        help="Dedup mode: probability ratio of consecutive cluster sizes. Default 0.5.")
    parser.add_argument("--affiliation_share", type=float, default=0.5,
                        help="Share of research affiliations; the rest are companies. Default 0.5.")
    parser.add_argument("--corruption_scale", type=float, default=1.0,
                        help="Multiply every default corruption probability by this. Default 1.0.")
    parser.add_argument("--name_only", action="store_true",
                        help="Write only id and name (no city and country fields).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = _parse_args(argv)
    corruption = Corruption().scaled(args.corruption_scale)
    common = {"seed": args.seed, "corruption": corruption, "location_fields": not args.name_only,
              "affiliation_share": args.affiliation_share}
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    if args.mode == "link":
        a, b, pairs = make_link_corpora(args.entities, overlap=args.overlap, **common)
        outputs = {f"a.{args.format}": a, f"b.{args.format}": b}
    else:
        recs, pairs = make_dedup_corpus(args.entities, min_size=args.min_size, max_size=args.max_size,
                                        cluster_decay=args.cluster_decay, **common)
        outputs = {f"organisations.{args.format}": recs}
    made = time.perf_counter()
    for name, records in outputs.items():
        write_records(records, os.path.join(args.out, name), args.format)
    write_truth(pairs, os.path.join(args.out, "true_pairs.csv"))
    done = time.perf_counter()
    n = sum(len(r) for r in outputs.values())
    print(f"wrote {n} records ({', '.join(outputs)}) and {len(pairs)} true pairs to {args.out}: "
          f"generated in {made - start:.1f} s, written in {done - made:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
