"""Phrase banks of the synthetic procurement-law corpus: documents, issuers, sectors and shared wording.

The topic banks (what each article is about) live in ``corpus_topics_a`` to ``corpus_topics_d``;
``ragperf_lab.corpus_docs`` assembles them into documents. Everything here is plain data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def lines(block: str) -> tuple[str, ...]:
    """The non-empty lines of a triple-quoted block, whitespace collapsed (a trailing backslash continues a line)."""
    return tuple(" ".join(s.split()) for s in block.strip().splitlines() if s.strip())


def words(text: str) -> tuple[str, ...]:
    """The whitespace-separated words of ``text``."""
    return tuple(text.split())


@dataclass(frozen=True)
class Topic:
    """What an article can be about: its title variants, wording and question templates."""

    key: str
    chapter: str
    titles: tuple[str, ...]
    clauses: tuple[str, ...]
    items: tuple[str, ...]
    asks: tuple[str, ...]
    ask_titles: tuple[tuple[int, ...] | None, ...]

    def asks_for(self, title: str) -> list[str]:
        """The question templates that suit an article titled ``title``."""
        index = self.titles.index(title)
        return [a for a, only in zip(self.asks, self.ask_titles, strict=True) if only is None or index in only]


_TAG = re.compile(r"^\[([\d,]+)\]\s*")


def topic(key: str, chapter: str, titles: str, clauses: str, items: str, asks: str) -> Topic:
    """Build a :class:`Topic` from triple-quoted blocks, one entry a line.

    A question line may start with ``[i,j]``: it then suits only articles titled ``titles[i]`` or ``titles[j]``.
    """
    texts, only = [], []
    for line in lines(asks):
        match = _TAG.match(line)
        texts.append(line[match.end() :] if match else line)
        only.append(tuple(int(i) for i in match.group(1).split(",")) if match else None)
    return Topic(key, chapter, lines(titles), lines(clauses), lines(items), tuple(texts), tuple(only))


# Chapter keys in the order chapters appear in a document, with their titles.
CHAPTERS: dict[str, str] = {
    "chung": "Những quy định chung",
    "hinh_thuc": "Hình thức và phương thức lựa chọn nhà thầu",
    "quy_trinh": "Quy trình lựa chọn nhà thầu",
    "hop_dong": "Hợp đồng",
    "xay_dung": "Hoạt động đầu tư xây dựng",
    "quan_ly": "Quản lý hoạt động đấu thầu",
    "thi_hanh": "Điều khoản thi hành",
}

ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")


@dataclass(frozen=True)
class RealDoc:
    """A document of the real legal framework: its number and subject are real, its articles' wording is not."""

    doc_type: str
    number: str
    name: str
    title: str
    year: int
    self_ref: str
    sector: str
    sector_short: str
    refs: tuple[str, ...]
    topics: tuple[str, ...]


_ALL_SELECTION = (
    "pham_vi doi_tuong giai_thich tu_cach canh_tranh uu_dai hanh_vi_cam chi_phi thong_tin "
    "rong_rai han_che chi_dinh chao_hang mua_sam_truc_tiep tu_thuc_hien dac_biet mua_sam_tap_trung "
    "ke_hoach gia_goi_thau hsmt bao_dam_du_thau mo_thau danh_gia phuong_phap thuong_thao ket_qua "
    "qua_mang tinh_huong loai_hop_dong bao_dam_thuc_hien dieu_chinh_hop_dong kien_nghi thanh_tra "
    "xu_ly_vi_pham trach_nhiem chung_chi hieu_luc"
)

# fmt: off
REAL_DOCS: tuple[RealDoc, ...] = (
    RealDoc(
        "luat", "22/2023/QH15", "Luật Đấu thầu", "Luật Đấu thầu", 2023, "Luật này",
        "gói thầu thuộc dự án đầu tư và dự toán mua sắm sử dụng vốn nhà nước", "gói thầu sử dụng vốn nhà nước",
        ("Luật Đấu thầu 22/2023/QH15", "Luật Đấu thầu số 22/2023/QH15", "Luật Đấu thầu 2023"),
        words(_ALL_SELECTION),
    ),
    RealDoc(
        "nghi_dinh", "24/2024/NĐ-CP", "Nghị định",
        "Nghị định quy định chi tiết một số điều và biện pháp thi hành Luật Đấu thầu về lựa chọn nhà thầu",
        2024, "Nghị định này",
        "gói thầu cung cấp dịch vụ tư vấn, dịch vụ phi tư vấn, hàng hóa, xây lắp và hỗn hợp",
        "gói thầu tư vấn, phi tư vấn, hàng hóa, xây lắp",
        ("Nghị định 24/2024/NĐ-CP", "Nghị định số 24/2024/NĐ-CP của Chính phủ", "Nghị định 24"),
        words(
            "pham_vi doi_tuong tu_cach uu_dai chi_phi thong_tin chi_dinh chao_hang mua_sam_truc_tiep dac_biet "
            "ke_hoach gia_goi_thau hsmt bao_dam_du_thau mo_thau danh_gia phuong_phap thuong_thao ket_qua "
            "qua_mang tinh_huong loai_hop_dong bao_dam_thuc_hien tam_ung_thanh_toan dieu_chinh_hop_dong "
            "nghiem_thu kien_nghi chung_chi bao_cao hieu_luc"
        ),
    ),
    RealDoc(
        "nghi_dinh", "214/2025/NĐ-CP", "Nghị định",
        "Nghị định quy định chi tiết một số điều và biện pháp thi hành Luật Đấu thầu về lựa chọn nhà thầu",
        2025, "Nghị định này",
        "gói thầu mua sắm công, dự án đầu tư công và gói thầu của doanh nghiệp nhà nước",
        "gói thầu mua sắm công của doanh nghiệp nhà nước",
        ("Nghị định 214/2025/NĐ-CP", "Nghị định số 214/2025/NĐ-CP", "Nghị định 214"),
        words(
            "pham_vi doi_tuong giai_thich tu_cach canh_tranh uu_dai chi_dinh mua_sam_tap_trung tu_thuc_hien "
            "ke_hoach gia_goi_thau hsmt bao_dam_du_thau danh_gia phuong_phap thuong_thao ket_qua qua_mang "
            "tinh_huong loai_hop_dong tam_ung_thanh_toan dieu_chinh_hop_dong nghiem_thu kien_nghi "
            "thanh_tra xu_ly_vi_pham trach_nhiem hieu_luc"
        ),
    ),
    RealDoc(
        "thong_tu", "22/2024/TT-BKHĐT", "Thông tư",
        "Thông tư hướng dẫn việc cung cấp, đăng tải thông tin về lựa chọn nhà thầu và mẫu hồ sơ đấu thầu "
        "trên Hệ thống mạng đấu thầu quốc gia",
        2024, "Thông tư này",
        "gói thầu lựa chọn nhà thầu qua mạng trên Hệ thống mạng đấu thầu quốc gia", "gói thầu đấu thầu qua mạng",
        ("Thông tư 22/2024/TT-BKHĐT", "Thông tư số 22/2024/TT-BKHĐT của Bộ Kế hoạch và Đầu tư"),
        words("pham_vi doi_tuong thong_tin hsmt mo_thau danh_gia qua_mang tinh_huong bao_cao hieu_luc"),
    ),
    RealDoc(
        "luat", "50/2014/QH13", "Luật Xây dựng", "Luật Xây dựng", 2014, "Luật này",
        "dự án đầu tư xây dựng công trình", "dự án đầu tư xây dựng công trình",
        ("Luật Xây dựng 50/2014/QH13", "Luật Xây dựng số 50/2014/QH13", "Luật Xây dựng 2014"),
        words(
            "pham_vi doi_tuong giai_thich nang_luc_xay_dung giam_sat_thi_cong ke_hoach loai_hop_dong "
            "bao_dam_thuc_hien tam_ung_thanh_toan dieu_chinh_hop_dong nghiem_thu thanh_tra hieu_luc"
        ),
    ),
    RealDoc(
        "luat", "62/2020/QH14", "Luật sửa đổi, bổ sung một số điều của Luật Xây dựng",
        "Luật sửa đổi, bổ sung một số điều của Luật Xây dựng", 2020, "Luật này",
        "công trình xây dựng sử dụng vốn đầu tư công", "công trình sử dụng vốn đầu tư công",
        ("Luật 62/2020/QH14", "Luật sửa đổi Luật Xây dựng số 62/2020/QH14"),
        words("pham_vi nang_luc_xay_dung giam_sat_thi_cong nghiem_thu hieu_luc"),
    ),
    RealDoc(
        "nghi_dinh", "37/2015/NĐ-CP", "Nghị định", "Nghị định quy định chi tiết về hợp đồng xây dựng", 2015,
        "Nghị định này", "hợp đồng thi công xây dựng công trình", "hợp đồng thi công xây dựng",
        ("Nghị định 37/2015/NĐ-CP", "Nghị định số 37/2015/NĐ-CP về hợp đồng xây dựng"),
        words(
            "pham_vi loai_hop_dong bao_dam_thuc_hien tam_ung_thanh_toan dieu_chinh_hop_dong nghiem_thu "
            "hieu_luc"
        ),
    ),
    RealDoc(
        "nghi_dinh", "122/2021/NĐ-CP", "Nghị định",
        "Nghị định quy định về xử phạt vi phạm hành chính trong lĩnh vực kế hoạch và đầu tư", 2021,
        "Nghị định này", "hoạt động đấu thầu, đầu tư và kế hoạch", "hoạt động đấu thầu, đầu tư",
        ("Nghị định 122/2021/NĐ-CP", "Nghị định số 122/2021/NĐ-CP về xử phạt vi phạm hành chính"),
        words("pham_vi hanh_vi_cam xu_ly_vi_pham thanh_tra trach_nhiem hieu_luc"),
    ),
    RealDoc(
        "thong_tu", "07/2024/TT-BYT", "Thông tư", "Thông tư quy định về đấu thầu thuốc tại cơ sở y tế công lập",
        2024, "Thông tư này", "gói thầu mua thuốc generic, thuốc biệt dược gốc tại cơ sở y tế công lập",
        "gói thầu thuốc tại cơ sở y tế công lập",
        ("Thông tư 07/2024/TT-BYT", "Thông tư số 07/2024/TT-BYT của Bộ Y tế"),
        words(
            "pham_vi giai_thich ke_hoach gia_goi_thau hsmt danh_gia phuong_phap mua_sam_tap_trung "
            "thuong_thao hieu_luc"
        ),
    ),
    RealDoc(
        "thong_tu", "14/2023/TT-BYT", "Thông tư",
        "Thông tư quy định trình tự, thủ tục xây dựng giá gói thầu mua sắm hàng hóa và cung cấp dịch vụ "
        "thuộc lĩnh vực trang thiết bị y tế tại các cơ sở y tế công lập",
        2023, "Thông tư này", "gói thầu mua sắm trang thiết bị y tế tại cơ sở y tế công lập",
        "gói thầu trang thiết bị y tế",
        ("Thông tư 14/2023/TT-BYT", "Thông tư số 14/2023/TT-BYT của Bộ Y tế"),
        words("pham_vi doi_tuong gia_goi_thau ke_hoach hsmt hieu_luc"),
    ),
    RealDoc(
        "quyet_dinh", "17/2019/QĐ-TTg", "Quyết định",
        "Quyết định về một số gói thầu, nội dung mua sắm nhằm duy trì hoạt động thường xuyên áp dụng "
        "hình thức lựa chọn nhà thầu trong trường hợp đặc biệt",
        2019, "Quyết định này", "gói thầu duy trì hoạt động thường xuyên trong trường hợp đặc biệt",
        "gói thầu duy trì hoạt động thường xuyên",
        ("Quyết định 17/2019/QĐ-TTg", "Quyết định số 17/2019/QĐ-TTg của Thủ tướng Chính phủ"),
        words("pham_vi dac_biet chi_dinh trach_nhiem hieu_luc"),
    ),
    RealDoc(
        "thong_tu", "58/2016/TT-BTC", "Thông tư",
        "Thông tư quy định chi tiết việc sử dụng vốn nhà nước để mua sắm nhằm duy trì hoạt động thường xuyên "
        "của cơ quan nhà nước, đơn vị thuộc lực lượng vũ trang nhân dân, đơn vị sự nghiệp công lập",
        2016, "Thông tư này", "dự toán mua sắm tài sản nhằm duy trì hoạt động thường xuyên",
        "gói thầu mua sắm tài sản thường xuyên",
        ("Thông tư 58/2016/TT-BTC", "Thông tư số 58/2016/TT-BTC của Bộ Tài chính"),
        words("pham_vi ke_hoach chao_hang mua_sam_truc_tiep mua_sam_tap_trung ket_qua hieu_luc"),
    ),
)
# fmt: on

MINISTRIES: dict[str, str] = {
    "BYT": "Bộ Y tế",
    "BXD": "Bộ Xây dựng",
    "BGTVT": "Bộ Giao thông vận tải",
    "BNNPTNT": "Bộ Nông nghiệp và Phát triển nông thôn",
    "BGDĐT": "Bộ Giáo dục và Đào tạo",
    "BTTTT": "Bộ Thông tin và Truyền thông",
    "BTNMT": "Bộ Tài nguyên và Môi trường",
    "BCA": "Bộ Công an",
    "BCT": "Bộ Công Thương",
    "BTC": "Bộ Tài chính",
    "BVHTTDL": "Bộ Văn hóa, Thể thao và Du lịch",
    "BNV": "Bộ Nội vụ",
    "BQP": "Bộ Quốc phòng",
    "BLĐTBXH": "Bộ Lao động - Thương binh và Xã hội",
    "BKHCN": "Bộ Khoa học và Công nghệ",
}

CITIES = ("Hà Nội", "Hồ Chí Minh", "Hải Phòng", "Đà Nẵng", "Cần Thơ")
PROVINCES = CITIES + lines(
    """
    An Giang
    Bà Rịa - Vũng Tàu
    Bắc Giang
    Bắc Kạn
    Bạc Liêu
    Bắc Ninh
    Bến Tre
    Bình Định
    Bình Dương
    Bình Phước
    Bình Thuận
    Cà Mau
    Cao Bằng
    Đắk Lắk
    Đắk Nông
    Điện Biên
    Đồng Nai
    Đồng Tháp
    Gia Lai
    Hà Giang
    Hà Nam
    Hà Tĩnh
    Hải Dương
    Hậu Giang
    Hòa Bình
    Hưng Yên
    Khánh Hòa
    Kiên Giang
    Kon Tum
    Lai Châu
    Lâm Đồng
    Lạng Sơn
    Lào Cai
    Long An
    Nam Định
    Nghệ An
    Ninh Bình
    Ninh Thuận
    Phú Thọ
    Phú Yên
    Quảng Bình
    Quảng Nam
    Quảng Ngãi
    Quảng Ninh
    Quảng Trị
    Sóc Trăng
    Sơn La
    Tây Ninh
    Thái Bình
    Thái Nguyên
    Thanh Hóa
    Thừa Thiên Huế
    Tiền Giang
    Trà Vinh
    Tuyên Quang
    Vĩnh Long
    Vĩnh Phúc
    Yên Bái
    """
)


@dataclass(frozen=True)
class Sector:
    """A kind of procurement package: the phrase, a short name, the ministry in charge, the provincial office."""

    phrase: str
    short: str
    ministry: str
    office: str


def _sector(row: str) -> Sector:
    phrase, short, ministry, office = (s.strip() for s in row.split(";"))
    return Sector(phrase, short, ministry, office)


SECTORS: tuple[Sector, ...] = tuple(
    _sector(row)
    for row in lines(
        """
        gói thầu mua sắm thiết bị y tế; thiết bị y tế; BYT; Sở Y tế
        gói thầu mua thuốc, hóa chất và vật tư xét nghiệm; hóa chất, vật tư xét nghiệm; BYT; Sở Y tế
        gói thầu mua vắc xin và sinh phẩm y tế; vắc xin, sinh phẩm; BYT; Sở Y tế
        gói thầu xây lắp trạm y tế xã; trạm y tế xã; BYT; Sở Y tế
        gói thầu xây lắp công trình giao thông đường bộ; đường giao thông nông thôn; BGTVT; Sở Giao thông vận tải
        gói thầu duy tu, bảo dưỡng đường thủy nội địa; đường thủy nội địa; BGTVT; Sở Giao thông vận tải
        gói thầu nạo vét luồng hàng hải và cảng cá; nạo vét luồng, cảng cá; BGTVT; Sở Giao thông vận tải
        gói thầu xây lắp công trình thủy lợi, kè chống sạt lở; thủy lợi, kè chống sạt lở; BNNPTNT; Sở Nông nghiệp
        gói thầu mua giống cây trồng, phân bón và vật tư nông nghiệp; giống cây trồng, phân bón; BNNPTNT; \
            Sở Nông nghiệp
        gói thầu trồng rừng, chăm sóc và bảo vệ rừng phòng hộ; trồng rừng phòng hộ; BNNPTNT; Sở Nông nghiệp
        gói thầu cấp nước sạch nông thôn; cấp nước sạch nông thôn; BNNPTNT; Sở Nông nghiệp
        gói thầu mua sắm thiết bị dạy học và sách giáo khoa; thiết bị dạy học; BGDĐT; Sở Giáo dục và Đào tạo
        gói thầu xây lắp phòng học, nhà đa năng trường học; phòng học, nhà đa năng; BGDĐT; Sở Giáo dục và Đào tạo
        gói thầu cung cấp suất ăn bán trú cho học sinh; suất ăn bán trú; BGDĐT; Sở Giáo dục và Đào tạo
        gói thầu thuê dịch vụ công nghệ thông tin và phần mềm; phần mềm, dịch vụ công nghệ thông tin; \
            BTTTT; Sở Thông tin và Truyền thông
        gói thầu thuê đường truyền dữ liệu và trung tâm dữ liệu; đường truyền, trung tâm dữ liệu; BTTTT; Sở \
            Thông tin và Truyền thông
        gói thầu in ấn tài liệu, ấn phẩm tuyên truyền; in ấn tài liệu, ấn phẩm; BTTTT; Sở Thông tin và Truyền thông
        gói thầu thu gom, xử lý chất thải rắn sinh hoạt; chất thải rắn sinh hoạt; BTNMT; Sở Tài nguyên và Môi trường
        gói thầu đo đạc, lập bản đồ địa chính; đo đạc bản đồ địa chính; BTNMT; Sở Tài nguyên và Môi trường
        gói thầu quan trắc môi trường nước, không khí; quan trắc môi trường; BTNMT; Sở Tài nguyên và Môi trường
        gói thầu mua sắm phương tiện phòng cháy, chữa cháy; phương tiện phòng cháy chữa cháy; BCA; Công an
        gói thầu lắp đặt camera giám sát an ninh trật tự; camera giám sát an ninh; BCA; Công an
        gói thầu tư vấn khảo sát, thiết kế xây dựng; khảo sát, thiết kế xây dựng; BXD; Sở Xây dựng
        gói thầu lắp đặt hệ thống chiếu sáng công cộng; chiếu sáng công cộng; BXD; Sở Xây dựng
        gói thầu cải tạo, sửa chữa trụ sở làm việc; sửa chữa trụ sở làm việc; BXD; Sở Xây dựng
        gói thầu lắp đặt lưới điện trung áp nông thôn; lưới điện trung áp; BCT; Sở Công Thương
        gói thầu mua sắm xe ô tô chuyên dùng; xe ô tô chuyên dùng; BTC; Sở Tài chính
        gói thầu bảo hiểm tài sản công; bảo hiểm tài sản công; BTC; Sở Tài chính
        gói thầu kiểm toán báo cáo quyết toán dự án hoàn thành; kiểm toán quyết toán; BTC; Sở Tài chính
        gói thầu tu bổ di tích và xây dựng nhà văn hóa; tu bổ di tích, nhà văn hóa; BVHTTDL; Sở Văn hóa, \
            Thể thao và Du lịch
        gói thầu số hóa tài liệu lưu trữ; số hóa tài liệu lưu trữ; BNV; Sở Nội vụ
        gói thầu mua sắm quân trang và doanh cụ; quân trang, doanh cụ; BQP; Bộ Chỉ huy quân sự
        gói thầu đào tạo nghề cho lao động nông thôn; đào tạo nghề lao động nông thôn; BLĐTBXH; Sở Lao động \
            - Thương binh và Xã hội
        gói thầu mua sắm thiết bị thí nghiệm khoa học; thiết bị thí nghiệm; BKHCN; Sở Khoa học và Công nghệ
        """
    )
)

# What a generated document is about, for its title ("Quy định về ...").
THEMES = lines(
    """
    lựa chọn nhà thầu
    phân cấp, ủy quyền trong lựa chọn nhà thầu
    tổ chức đấu thầu qua mạng
    quản lý hợp đồng và giám sát hoạt động đấu thầu
    mua sắm tập trung và lựa chọn nhà thầu
    """
)

# The first clause of an article: what it covers, for which packages and where.
OPENINGS = lines(
    """
    Điều này quy định về {f} trong quá trình lựa chọn nhà thầu thực hiện {sector} {scope}.
    Quy định về {f} tại Điều này áp dụng đối với {sector} {scope}.
    {F} khi tổ chức lựa chọn nhà thầu thực hiện {sector} {scope} phải tuân thủ các yêu cầu tại Điều này.
    Việc áp dụng quy định về {f} đối với {sector} {scope} thực hiện theo nguyên tắc công khai, minh bạch.
    """
)

# Closing clauses any article may end with; like the details they name the subject and the place.
CLOSINGS = lines(
    """
    {org} có trách nhiệm hướng dẫn, kiểm tra việc thực hiện quy định về {f} đối với {pkg} {scope}; trường \
        hợp phát sinh vướng mắc, kịp thời báo cáo {boss} xem xét, giải quyết.
    Các nội dung liên quan đến {f} của {pkg} {scope} chưa được quy định tại Điều này thực hiện theo pháp luật \
        về đấu thầu và pháp luật có liên quan.
    Thời gian thực hiện các công việc về {f} đối với {pkg} {scope} được tính theo ngày làm việc, không kể \
        ngày nghỉ lễ, ngày nghỉ Tết.
    Hồ sơ liên quan đến {f} của {pkg} {scope} được lưu trữ tối thiểu {months} tháng kể từ ngày quyết toán \
        hợp đồng.
    Chủ đầu tư {pkg} {scope} chịu trách nhiệm trước pháp luật về tính chính xác của thông tin đăng tải liên \
        quan đến {f}.
    """
)

# Detail clauses any article may carry; they repeat the article's subject as real regulations do.
DETAILS = lines(
    """
    Hồ sơ, tài liệu liên quan đến {f} của {pkg} {scope} phải được đăng tải đầy đủ trên Hệ thống mạng đấu thầu \
        quốc gia trong thời hạn {days} ngày kể từ ngày ban hành.
    Trường hợp nội dung về {f} trong hồ sơ mời thầu {pkg} {scope} chưa rõ, nhà thầu được đề nghị bên mời thầu làm rõ \
        chậm nhất {count} ngày làm việc trước thời điểm đóng thầu.
    Đối với {pkg} {scope} có giá trị dưới {amount}, việc thực hiện quy định về {f} được áp dụng quy trình rút gọn \
        và hoàn thành trong {days} ngày.
    Đối với {pkg} {scope}, chủ đầu tư căn cứ điều kiện thực tế để quy định chi tiết về {f} trong hồ sơ mời \
        thầu nhưng không trái với quy định tại Điều này.
    Tổ chuyên gia có trách nhiệm kiểm tra việc tuân thủ quy định về {f} đối với {pkg} {scope} và ghi nhận kết quả \
        trong báo cáo đánh giá hồ sơ dự thầu.
    Trường hợp phát hiện sai phạm liên quan đến {f}, {org} có văn bản yêu cầu chủ đầu tư {pkg} khắc phục \
        trong thời hạn {days} ngày.
    Nhà thầu tham gia {pkg} {scope} có trách nhiệm tuân thủ quy định về {f} trong suốt quá trình tham dự \
        thầu và thực hiện hợp đồng.
    Định kỳ {months} tháng, {org} tổng hợp tình hình thực hiện quy định về {f} đối với {pkg} {scope} và \
        báo cáo {boss}.
    Mọi thay đổi liên quan đến {f} sau khi phát hành hồ sơ mời thầu {pkg} {scope} phải được thông báo đến tất cả \
        nhà thầu đã nhận hồ sơ mời thầu.
    Chi phí phát sinh liên quan đến {f} được tính trong dự toán {pkg} {scope} và không vượt quá {pct} giá \
        gói thầu.
    """
)

# Questions any article can answer. {ctx} names its packages and province or ministry, {ref} its document.
GENERIC_ASKS = lines(
    """
    Theo {ref}, {f} đối với {ctx} được quy định như thế nào?
    {ref} quy định gì về {f} đối với {ctx}?
    Cho tôi hỏi {f} của {ctx} gồm những nội dung nào?
    {F} đối với {ctx} được quy định ra sao?
    Tôi là nhà thầu đang chuẩn bị tham dự {ctx}. Xin hỏi {f} được thực hiện theo trình tự nào và nhà thầu \
        cần chuẩn bị những tài liệu gì để không bị loại?
    {F} {ctx}?
    Nhà thầu cần đáp ứng điều kiện gì về {f} khi tham gia {ctx}?
    Theo {ref}, {f} được quy định như thế nào?
    Nội dung về {f} trong {ref} áp dụng cho {ctx} ra sao?
    """
)
