"""The bulk bench's customer file: a realistic CSV of N customers, written deterministically from a seed.

Names are mostly Chinese (weighted common surnames, one- or two-character given names from a pool of
common characters), some in pinyin or English; every row has a unique email and/or a unique mobile
number written the ways people type them (`13800138000`, `138 0013 8000`, `+86 138-0013-8000`, ...),
so every row is valid and none collides with another. About 40% have a company and a title; all have
a province and city, most a tag set and a source.

A share of rows (`dup_rate`) are second entries of an earlier customer: same company (when it has one)
and city, its own email and phone, and the name written again (the same, or a pinyin variant with a
hyphen, other case or a middle space) — what a duplicate scan should find. Their row numbers are
returned, so the bench can check the scan finds them.
"""

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

HEADER = ["姓名", "邮箱", "手机", "公司", "职位", "省份", "城市", "标签", "来源"]
MAPPING = {
    "姓名": "name",
    "邮箱": "email",
    "手机": "phone",
    "公司": "company",
    "职位": "title",
    "省份": "province",
    "城市": "city",
    "标签": "tags",
    "来源": "source",
}

# (surname, pinyin, weight ~ share in ‰ of the population, rounded)
SURNAMES: list[tuple[str, str, int]] = [
    ("王", "wang", 72),
    ("李", "li", 72),
    ("张", "zhang", 68),
    ("刘", "liu", 53),
    ("陈", "chen", 45),
    ("杨", "yang", 31),
    ("黄", "huang", 23),
    ("赵", "zhao", 22),
    ("吴", "wu", 20),
    ("周", "zhou", 19),
    ("徐", "xu", 15),
    ("孙", "sun", 15),
    ("马", "ma", 14),
    ("朱", "zhu", 13),
    ("胡", "hu", 12),
    ("郭", "guo", 11),
    ("何", "he", 10),
    ("林", "lin", 10),
    ("高", "gao", 10),
    ("罗", "luo", 9),
    ("郑", "zheng", 9),
    ("梁", "liang", 8),
    ("谢", "xie", 7),
    ("宋", "song", 6),
    ("唐", "tang", 6),
    ("许", "xu", 6),
    ("邓", "deng", 5),
    ("韩", "han", 5),
    ("冯", "feng", 5),
    ("曹", "cao", 5),
    ("彭", "peng", 5),
    ("曾", "zeng", 5),
    ("肖", "xiao", 5),
    ("田", "tian", 4),
    ("董", "dong", 4),
    ("潘", "pan", 4),
    ("袁", "yuan", 4),
    ("蔡", "cai", 4),
    ("蒋", "jiang", 4),
    ("余", "yu", 4),
    ("于", "yu", 4),
    ("杜", "du", 4),
    ("叶", "ye", 4),
    ("程", "cheng", 4),
    ("魏", "wei", 3),
    ("苏", "su", 3),
    ("吕", "lv", 3),
    ("丁", "ding", 3),
    ("任", "ren", 3),
    ("卢", "lu", 3),
    ("姚", "yao", 3),
    ("沈", "shen", 3),
    ("钟", "zhong", 3),
    ("姜", "jiang", 3),
    ("崔", "cui", 3),
    ("谭", "tan", 3),
    ("陆", "lu", 3),
    ("范", "fan", 2),
    ("汪", "wang", 2),
    ("廖", "liao", 2),
    ("石", "shi", 2),
    ("金", "jin", 2),
    ("韦", "wei", 2),
    ("贾", "jia", 2),
    ("夏", "xia", 2),
    ("傅", "fu", 2),
    ("方", "fang", 2),
    ("邹", "zou", 2),
    ("熊", "xiong", 2),
    ("白", "bai", 2),
    ("孟", "meng", 2),
    ("秦", "qin", 2),
    ("邱", "qiu", 2),
    ("侯", "hou", 2),
    ("江", "jiang", 2),
    ("尹", "yin", 2),
    ("薛", "xue", 2),
    ("闫", "yan", 2),
    ("段", "duan", 2),
    ("雷", "lei", 2),
    ("欧阳", "ouyang", 1),
    ("司马", "sima", 1),
    ("上官", "shangguan", 1),
]
# Characters of given names, with pinyin.
GIVEN_CHARS: list[tuple[str, str]] = [
    (c, p)
    for c, p in (
        ("伟", "wei"),
        ("芳", "fang"),
        ("娜", "na"),
        ("敏", "min"),
        ("静", "jing"),
        ("丽", "li"),
        ("强", "qiang"),
        ("磊", "lei"),
        ("军", "jun"),
        ("洋", "yang"),
        ("勇", "yong"),
        ("艳", "yan"),
        ("杰", "jie"),
        ("娟", "juan"),
        ("涛", "tao"),
        ("明", "ming"),
        ("超", "chao"),
        ("霞", "xia"),
        ("平", "ping"),
        ("刚", "gang"),
        ("秀", "xiu"),
        ("英", "ying"),
        ("华", "hua"),
        ("建", "jian"),
        ("国", "guo"),
        ("志", "zhi"),
        ("海", "hai"),
        ("燕", "yan"),
        ("晓", "xiao"),
        ("东", "dong"),
        ("文", "wen"),
        ("俊", "jun"),
        ("婷", "ting"),
        ("浩", "hao"),
        ("然", "ran"),
        ("子", "zi"),
        ("涵", "han"),
        ("欣", "xin"),
        ("怡", "yi"),
        ("宇", "yu"),
        ("轩", "xuan"),
        ("梓", "zi"),
        ("萱", "xuan"),
        ("思", "si"),
        ("远", "yuan"),
        ("佳", "jia"),
        ("雨", "yu"),
        ("桐", "tong"),
        ("嘉", "jia"),
        ("瑞", "rui"),
        ("鹏", "peng"),
        ("飞", "fei"),
        ("慧", "hui"),
        ("玲", "ling"),
        ("红", "hong"),
        ("梅", "mei"),
        ("兰", "lan"),
        ("春", "chun"),
        ("秋", "qiu"),
        ("冬", "dong"),
        ("辉", "hui"),
        ("亮", "liang"),
        ("成", "cheng"),
        ("龙", "long"),
        ("凤", "feng"),
        ("琳", "lin"),
        ("颖", "ying"),
        ("倩", "qian"),
        ("雪", "xue"),
        ("晨", "chen"),
        ("阳", "yang"),
        ("博", "bo"),
        ("昊", "hao"),
        ("泽", "ze"),
        ("诗", "shi"),
        ("琪", "qi"),
        ("悦", "yue"),
        ("彤", "tong"),
        ("一", "yi"),
        ("诺", "nuo"),
        ("安", "an"),
        ("乐", "le"),
        ("天", "tian"),
        ("永", "yong"),
        ("德", "de"),
        ("福", "fu"),
        ("庆", "qing"),
        ("金", "jin"),
        ("宝", "bao"),
        ("荣", "rong"),
        ("新", "xin"),
        ("立", "li"),
        ("中", "zhong"),
        ("振", "zhen"),
        ("家", "jia"),
        ("玉", "yu"),
        ("兴", "xing"),
        ("凯", "kai"),
        ("斌", "bin"),
        ("鑫", "xin"),
        ("婉", "wan"),
        ("若", "ruo"),
        ("语", "yu"),
        ("晴", "qing"),
        ("瑶", "yao"),
        ("菲", "fei"),
        ("蕾", "lei"),
        ("薇", "wei"),
        ("岚", "lan"),
        ("逸", "yi"),
        ("辰", "chen"),
        ("航", "hang"),
        ("睿", "rui"),
        ("铭", "ming"),
        ("毅", "yi"),
        ("峰", "feng"),
        ("帆", "fan"),
        ("程", "cheng"),
        ("景", "jing"),
    )
]
WESTERN_GIVEN = ["David", "Michael", "Jennifer", "Grace", "Kevin", "Linda", "Eric", "Sophie", "Tony", "Amy", "Jason"]
# (province, city, weight)
CITIES: list[tuple[str, str, int]] = [
    ("广东省", "深圳市", 40),
    ("广东省", "广州市", 40),
    ("上海市", "上海市", 50),
    ("北京市", "北京市", 50),
    ("浙江省", "杭州市", 25),
    ("江苏省", "南京市", 20),
    ("江苏省", "苏州市", 22),
    ("四川省", "成都市", 30),
    ("湖北省", "武汉市", 25),
    ("重庆市", "重庆市", 28),
    ("天津市", "天津市", 18),
    ("陕西省", "西安市", 18),
    ("湖南省", "长沙市", 15),
    ("河南省", "郑州市", 15),
    ("山东省", "青岛市", 12),
    ("山东省", "济南市", 11),
    ("福建省", "厦门市", 8),
    ("福建省", "福州市", 9),
    ("辽宁省", "沈阳市", 10),
    ("辽宁省", "大连市", 8),
    ("广东省", "东莞市", 14),
    ("广东省", "佛山市", 13),
    ("浙江省", "宁波市", 10),
    ("安徽省", "合肥市", 11),
    ("江西省", "南昌市", 7),
    ("云南省", "昆明市", 8),
    ("广西壮族自治区", "南宁市", 7),
    ("黑龙江省", "哈尔滨市", 8),
    ("吉林省", "长春市", 7),
    ("河北省", "石家庄市", 8),
    ("山西省", "太原市", 6),
    ("贵州省", "贵阳市", 6),
    ("甘肃省", "兰州市", 4),
    ("海南省", "海口市", 3),
    ("新疆维吾尔自治区", "乌鲁木齐市", 3),
    ("内蒙古自治区", "呼和浩特市", 3),
    ("江苏省", "无锡市", 8),
    ("浙江省", "温州市", 7),
    ("山东省", "烟台市", 5),
    ("广东省", "珠海市", 4),
]
BRANDS = [
    "星河",
    "华信",
    "东方",
    "金桥",
    "新创",
    "恒达",
    "瑞丰",
    "天成",
    "远航",
    "盛世",
    "嘉禾",
    "博远",
    "宏图",
    "鼎盛",
    "汇通",
    "永泰",
    "明德",
    "光华",
    "长青",
    "凯达",
    "正泰",
    "中联",
    "华润",
    "信达",
    "腾飞",
    "锦程",
    "鸿运",
    "佳美",
    "百川",
    "万象",
    "海纳",
    "智远",
    "云帆",
    "晨光",
    "安顺",
    "兴业",
    "同创",
    "合众",
    "启明",
    "恒信",
]
INDUSTRIES = [
    "贸易有限公司",
    "科技有限公司",
    "电子股份有限公司",
    "物流有限公司",
    "软件有限公司",
    "建材有限公司",
    "食品有限公司",
    "医疗器械有限公司",
    "文化传媒有限公司",
    "农业科技有限公司",
    "教育咨询有限公司",
    "餐饮管理有限公司",
    "汽车服务有限公司",
    "服饰有限公司",
    "家居有限公司",
]
TITLES = ["采购经理", "总经理", "销售总监", "财务主管", "工程师", "店长", "行政专员", "市场经理", "技术总监", "董事长"]
SOURCES = ["website", "trade_show", "referral", "wechat", "partner", "cold_call", "douyin", "offline_store"]
TAG_SETS = ["", "", "", "vip", "wholesale", "retail", "new", "vip;wholesale", "corporate", "retail;new", "vip;老客户"]
EMAIL_DOMAINS = [
    ("qq.com", 40),
    ("163.com", 20),
    ("126.com", 8),
    ("gmail.com", 5),
    ("outlook.com", 4),
    ("sina.com", 4),
    ("foxmail.com", 4),
    ("139.com", 3),
    ("aliyun.com", 2),
    ("hotmail.com", 2),
]
# Mobile prefixes whose every 8-digit suffix is a valid CN mobile number.
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152"]
MOBILE_PREFIXES += ["155", "156", "157", "158", "159", "180", "181", "182", "183", "185", "186", "187", "188", "189"]
# Row number -> 8 digits as multiplication modulo a prime below 10^8: a bijection, so phones never repeat.
PHONE_MULTIPLIER = 48271
PHONE_MODULUS = 99_999_989


@dataclass
class BulkFile:
    path: Path
    rows: int
    bytes: int
    # (earlier row, later row) of every deliberate second entry, as file row numbers (header = row 1).
    duplicate_pairs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Person:
    name: str
    pinyin: tuple[str, str] | None  # (given, surname) when the name is pinyin, for variants
    company: str
    title: str
    province: str
    city: str


def write_customers_csv(path: Path, rows: int, *, seed: int = 20261122, dup_rate: float = 0.01) -> BulkFile:
    """Write `rows` data rows (plus the header) to `path`, UTF-8 with a BOM as spreadsheet tools save it."""
    rng = random.Random(seed)
    surnames = [(s, p) for s, p, _ in SURNAMES]
    surname_weights = [w for _, _, w in SURNAMES]
    cities = [(p, c) for p, c, _ in CITIES]
    city_weights = [w for _, _, w in CITIES]
    domains = [d for d, _ in EMAIL_DOMAINS]
    domain_weights = [w for _, w in EMAIL_DOMAINS]
    companies_by_city: dict[str, list[str]] = {}
    for _, city, weight in CITIES:
        short = city.removesuffix("市")
        companies_by_city[city] = [
            f"{short}{rng.choice(BRANDS)}{rng.choice(BRANDS)}{rng.choice(INDUSTRIES)}" for _ in range(weight * 12)
        ]
    people: list[_Person] = []
    pairs: list[tuple[int, int]] = []
    phone_offset = rng.randrange(PHONE_MODULUS)
    with path.open("w", encoding="utf-8-sig", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for i in range(rows):
            row_number = i + 2
            if people and rng.random() < dup_rate:
                earlier = rng.randrange(len(people))
                person = _second_entry(rng, people[earlier])
                pairs.append((earlier + 2, row_number))
            else:
                person = _new_person(rng, surnames, surname_weights, cities, city_weights, companies_by_city)
            people.append(person)
            email, phone = _contact(rng, i, person, domains, domain_weights, phone_offset)
            writer.writerow(
                [
                    person.name,
                    email,
                    phone,
                    person.company,
                    person.title,
                    person.province,
                    person.city,
                    TAG_SETS[rng.randrange(len(TAG_SETS))],
                    SOURCES[rng.randrange(len(SOURCES))] if rng.random() < 0.8 else "",
                ]
            )
    return BulkFile(path=path, rows=rows, bytes=path.stat().st_size, duplicate_pairs=pairs)


def _new_person(
    rng: random.Random,
    surnames: list[tuple[str, str]],
    surname_weights: list[int],
    cities: list[tuple[str, str]],
    city_weights: list[int],
    companies_by_city: dict[str, list[str]],
) -> _Person:
    surname, surname_py = rng.choices(surnames, surname_weights)[0]
    given = [GIVEN_CHARS[rng.randrange(len(GIVEN_CHARS))] for _ in range(1 if rng.random() < 0.15 else 2)]
    given_cn = "".join(c for c, _ in given)
    given_py = "".join(p for _, p in given)
    style = rng.random()
    pinyin: tuple[str, str] | None = None
    if style < 0.90:
        name = surname + given_cn
    elif style < 0.96:
        name = f"{surname_py.title()} {given_py.title()}"
        pinyin = (given_py, surname_py)
    else:
        name = f"{rng.choice(WESTERN_GIVEN)} {surname_py.title()}"
    province, city = rng.choices(cities, city_weights)[0]
    employed = rng.random() < 0.4
    return _Person(
        name=name,
        pinyin=pinyin,
        company=rng.choice(companies_by_city[city]) if employed else "",
        title=rng.choice(TITLES) if employed else "",
        province=province,
        city=city,
    )


def _second_entry(rng: random.Random, first: _Person) -> _Person:
    """The same customer entered again: same company and city, the name as someone else typed it."""
    name = first.name
    if first.pinyin is not None and rng.random() < 0.7:
        given, surname = first.pinyin
        split = max(1, len(given) // 2)
        name = rng.choice(
            [
                f"{surname.title()} {given[:split].title()}-{given[split:]}",
                f"{surname} {given}",
                f"{given.title()} {surname.title()}",
                f"{surname.upper()} {given.title()}",
            ]
        )
    elif rng.random() < 0.3:
        name = f"{first.name} {rng.choice(['先生', '女士', '(重复)'])}"
    return _Person(name, first.pinyin, first.company, first.title, first.province, first.city)


def _contact(
    rng: random.Random,
    i: int,
    person: _Person,
    domains: list[str],
    domain_weights: list[int],
    phone_offset: int,
) -> tuple[str, str]:
    """A unique email (the row number after the last `_` makes it unique) and a unique mobile; at
    least one of the two."""
    kind = rng.random()
    has_email, has_phone = kind >= 0.05, kind < 0.92
    email = ""
    if has_email:
        local = (person.pinyin[1] + "." + person.pinyin[0]) if person.pinyin else f"user.{rng.randrange(10_000)}"
        if person.pinyin is None and rng.random() < 0.5:
            local = rng.choice(["kehu", "crm", "sales", "vip", "info"])
        domain = rng.choices(domains, domain_weights)[0]
        email = f"{local}_{i}@{domain}"
        if rng.random() < 0.05:
            email = email.title()
    phone = ""
    if has_phone:
        digits = f"{((i + phone_offset) * PHONE_MULTIPLIER) % PHONE_MODULUS:08d}"
        prefix = MOBILE_PREFIXES[i % len(MOBILE_PREFIXES)]
        style = rng.random()
        if style < 0.6:
            phone = f"{prefix}{digits}"
        elif style < 0.75:
            phone = f"{prefix} {digits[:4]} {digits[4:]}"
        elif style < 0.9:
            phone = f"+86 {prefix}-{digits[:4]}-{digits[4:]}"
        else:
            phone = f"+86{prefix}{digits}"
    return email, phone
