"""Topic bank, part D: contracts, construction, oversight and final provisions.

Placeholders as in ``corpus_topics_a``.
"""

from __future__ import annotations

from ragperf_lab.corpus_text import Topic, topic

TOPICS_D: tuple[Topic, ...] = (
    topic(
        "loai_hop_dong",
        "hop_dong",
        """
        Hợp đồng trọn gói
        Hợp đồng theo đơn giá cố định
        Hợp đồng theo đơn giá điều chỉnh
        """,
        """
        Hợp đồng trọn gói là hợp đồng có giá cố định trong suốt thời gian thực hiện đối với toàn bộ nội \
            dung công việc của {sector} {scope}.
        Hợp đồng theo đơn giá cố định được áp dụng khi khối lượng công việc chưa được xác định chính xác; \
            giá trị thanh toán bằng khối lượng thực tế nghiệm thu nhân với đơn giá trong hợp đồng.
        Hợp đồng theo đơn giá điều chỉnh áp dụng cho gói thầu có thời gian thực hiện trên {months} tháng mà \
            giá cả có khả năng biến động lớn.
        Khi áp dụng hợp đồng trọn gói, chủ đầu tư chịu trách nhiệm về tính chính xác của khối lượng mời \
            thầu; sai khác khối lượng không vượt quá {pct}.
        Loại hợp đồng được lựa chọn căn cứ các yếu tố sau:
        """,
        """
        tính chất, quy mô và thời gian thực hiện gói thầu
        mức độ xác định của khối lượng công việc
        khả năng biến động giá của vật liệu, nhân công, máy thi công
        yêu cầu về phân bổ rủi ro giữa các bên
        """,
        """
        [0] Hợp đồng trọn gói được áp dụng như thế nào theo {ref}?
        [2] Khi nào {pkg} áp dụng hợp đồng theo đơn giá điều chỉnh?
        [1] Hợp đồng theo đơn giá cố định thanh toán theo khối lượng nào?
        """,
    ),
    topic(
        "bao_dam_thuc_hien",
        "hop_dong",
        """
        Bảo đảm thực hiện hợp đồng
        Bảo lãnh tiền tạm ứng
        """,
        """
        Nhà thầu được lựa chọn thực hiện {sector} {scope} phải thực hiện biện pháp bảo đảm thực hiện hợp đồng trước \
            thời điểm hợp đồng có hiệu lực.
        Giá trị bảo đảm thực hiện hợp đồng từ {pct} đến 10% giá hợp đồng; trường hợp nhà thầu có uy tín \
            thấp thì giá trị bảo đảm không thấp hơn {pct2}.
        Thời gian có hiệu lực của bảo đảm thực hiện hợp đồng kéo dài đến khi nhà thầu chuyển sang nghĩa vụ \
            bảo hành, cộng thêm {days} ngày.
        Bảo lãnh tiền tạm ứng có giá trị tương đương khoản tiền tạm ứng và được giảm dần tương ứng với giá \
            trị tiền tạm ứng đã thu hồi.
        Nhà thầu không được hoàn trả bảo đảm thực hiện hợp đồng trong các trường hợp sau:
        """,
        """
        từ chối thực hiện hợp đồng khi hợp đồng đã có hiệu lực
        vi phạm thỏa thuận trong hợp đồng dẫn đến chấm dứt hợp đồng
        thực hiện hợp đồng chậm tiến độ do lỗi của nhà thầu nhưng từ chối gia hạn hiệu lực bảo đảm
        """,
        """
        [0] Giá trị bảo đảm thực hiện hợp đồng là bao nhiêu phần trăm giá hợp đồng theo {ref}?
        [0] Bảo đảm thực hiện hợp đồng {pkg} có hiệu lực đến khi nào?
        [1] Bảo lãnh tiền tạm ứng được giảm dần như thế nào?
        """,
    ),
    topic(
        "tam_ung_thanh_toan",
        "hop_dong",
        """
        Tạm ứng hợp đồng
        Thanh toán hợp đồng
        Hồ sơ thanh toán hợp đồng
        """,
        """
        Mức tạm ứng hợp đồng {sector} {scope} không vượt quá {pct2} giá hợp đồng tại thời điểm ký kết; trường hợp \
            cần tạm ứng cao hơn phải được người có thẩm quyền chấp thuận.
        Tiền tạm ứng được thu hồi dần qua các lần thanh toán và thu hồi hết khi giá trị thanh toán đạt 80% \
            giá hợp đồng.
        Chủ đầu tư thanh toán cho nhà thầu trong thời hạn {days} ngày làm việc kể từ ngày nhận đủ hồ sơ \
            thanh toán hợp lệ.
        Hồ sơ thanh toán hợp đồng gồm:
        """,
        """
        biên bản nghiệm thu khối lượng hoàn thành trong giai đoạn thanh toán
        bảng tính giá trị đề nghị thanh toán
        đề nghị thanh toán của nhà thầu
        hóa đơn giá trị gia tăng theo quy định
        bảo lãnh tiền tạm ứng còn hiệu lực
        """,
        """
        [0] Mức tạm ứng hợp đồng {pkg} tối đa bao nhiêu phần trăm?
        [1] Chủ đầu tư phải thanh toán cho nhà thầu trong bao nhiêu ngày theo {ref}?
        [2] Hồ sơ thanh toán hợp đồng gồm những giấy tờ nào?
        """,
    ),
    topic(
        "dieu_chinh_hop_dong",
        "hop_dong",
        """
        Điều chỉnh giá hợp đồng
        Sửa đổi hợp đồng và điều chỉnh tiến độ
        """,
        """
        Giá hợp đồng {sector} {scope} chỉ được điều chỉnh đối với hợp đồng theo đơn giá điều chỉnh, hợp đồng theo \
            thời gian và trong trường hợp bất khả kháng.
        Trường hợp chỉ số giá vật liệu xây dựng biến động trên {pct2} so với thời điểm ký hợp đồng, các bên \
            thương thảo điều chỉnh đơn giá.
        Tiến độ thực hiện hợp đồng được gia hạn tối đa {days2} ngày khi có thay đổi về phạm vi công việc \
            hoặc do nguyên nhân bất khả kháng.
        Việc sửa đổi hợp đồng được thực hiện trong các trường hợp sau:
        """,
        """
        thay đổi phạm vi công việc, yêu cầu kỹ thuật phù hợp với tình hình thực tế
        điều chỉnh khối lượng phát sinh hợp lý ngoài hợp đồng
        thay đổi nhà thầu phụ đã nêu trong hồ sơ dự thầu
        thay đổi chính sách về thuế làm ảnh hưởng đến giá hợp đồng
        """,
        """
        [0] Khi nào được điều chỉnh giá hợp đồng {pkg}?
        [1] Tiến độ hợp đồng được gia hạn tối đa bao nhiêu ngày theo {ref}?
        """,
    ),
    topic(
        "nghiem_thu",
        "hop_dong",
        """
        Nghiệm thu, bàn giao
        Bảo hành
        Thanh lý hợp đồng
        """,
        """
        Việc nghiệm thu {sector} {scope} được thực hiện theo từng giai đoạn và khi hoàn thành toàn bộ hợp đồng, có \
            sự tham gia của đơn vị sử dụng.
        Thời gian bảo hành đối với hàng hóa, công trình thuộc {sector} {scope} tối thiểu {months} tháng kể từ ngày \
            ký biên bản nghiệm thu đưa vào sử dụng.
        Mức tiền bảo hành tối thiểu bằng {pct} giá trị hợp đồng và được hoàn trả sau khi kết thúc thời gian bảo hành.
        Hợp đồng được thanh lý trong thời hạn {days} ngày kể từ ngày các bên hoàn thành nghĩa vụ theo hợp đồng.
        Hồ sơ nghiệm thu, bàn giao gồm:
        """,
        """
        biên bản nghiệm thu hoàn thành hạng mục công việc
        bản vẽ hoàn công và nhật ký thi công
        giấy chứng nhận xuất xứ, chất lượng hàng hóa
        tài liệu hướng dẫn sử dụng, vận hành và bảo trì
        """,
        """
        [1] Thời gian bảo hành {pkg} tối thiểu bao nhiêu tháng?
        [2] Hợp đồng phải thanh lý trong bao nhiêu ngày theo {ref}?
        [1] Mức tiền bảo hành tối thiểu là bao nhiêu phần trăm giá trị hợp đồng?
        [0] Hồ sơ nghiệm thu, bàn giao {pkg} gồm những gì?
        """,
    ),
    topic(
        "nang_luc_xay_dung",
        "xay_dung",
        """
        Điều kiện năng lực hoạt động xây dựng
        Chứng chỉ năng lực hoạt động xây dựng
        """,
        """
        Tổ chức tham gia {sector} {scope} phải có chứng chỉ năng lực hoạt động xây dựng phù hợp với \
            loại, cấp công trình.
        Chứng chỉ năng lực hoạt động xây dựng có hiệu lực tối đa {months} tháng và được công khai trên \
            trang thông tin điện tử của cơ quan cấp.
        Cá nhân đảm nhận chức danh chỉ huy trưởng công trường phải có chứng chỉ hành nghề và đã tham gia ít \
            nhất {count} công trình cùng loại.
        Hồ sơ đề nghị cấp chứng chỉ năng lực gồm:
        """,
        """
        đơn đề nghị cấp chứng chỉ năng lực
        quyết định thành lập hoặc giấy chứng nhận đăng ký doanh nghiệp
        danh sách cá nhân chủ chốt kèm chứng chỉ hành nghề
        hợp đồng và biên bản nghiệm thu công việc đã thực hiện
        """,
        """
        [1] Chứng chỉ năng lực hoạt động xây dựng có hiệu lực bao lâu theo {ref}?
        [0] Chỉ huy trưởng công trường {pkg} cần điều kiện gì?
        """,
    ),
    topic(
        "giam_sat_thi_cong",
        "xay_dung",
        """
        Giám sát thi công xây dựng
        Quản lý an toàn trong thi công xây dựng
        """,
        """
        Công trình thuộc {sector} {scope} phải được giám sát thi công xây dựng về chất lượng, khối lượng, tiến độ, \
            an toàn lao động và bảo vệ môi trường.
        Nhà thầu giám sát thi công xây dựng phải độc lập với nhà thầu thi công và nhà thầu cung cấp vật \
            liệu cho công trình.
        Nhà thầu thi công phải lập kế hoạch an toàn và báo cáo sự cố trong thời hạn {count} giờ kể từ khi \
            xảy ra sự cố.
        Nội dung giám sát thi công xây dựng gồm:
        """,
        """
        kiểm tra điều kiện khởi công công trình
        kiểm tra vật liệu, cấu kiện, thiết bị lắp đặt vào công trình
        kiểm tra biện pháp thi công và biện pháp bảo đảm an toàn
        xác nhận bản vẽ hoàn công
        tổ chức thí nghiệm đối chứng khi có nghi ngờ về chất lượng
        """,
        """
        [0] Nội dung giám sát thi công xây dựng {pkg} gồm những gì?
        [1] Nhà thầu phải báo cáo sự cố công trình trong bao nhiêu giờ theo {ref}?
        """,
    ),
    topic(
        "kien_nghi",
        "quan_ly",
        """
        Giải quyết kiến nghị trong lựa chọn nhà thầu
        Hội đồng tư vấn giải quyết kiến nghị
        """,
        """
        Nhà thầu tham dự {sector} {scope} có quyền kiến nghị về các vấn đề trong quá trình lựa chọn nhà thầu và kết \
            quả lựa chọn nhà thầu.
        Kiến nghị về kết quả lựa chọn nhà thầu được gửi trong thời hạn {days} ngày kể từ ngày kết quả được \
            đăng tải trên Hệ thống mạng đấu thầu quốc gia.
        Hội đồng tư vấn có báo cáo kết quả làm việc trong thời hạn {days} ngày; nhà thầu nộp chi phí giải \
            quyết kiến nghị bằng {pct} giá dự thầu, tối đa {amount}.
        Điều kiện để kiến nghị được xem xét, giải quyết gồm:
        """,
        """
        kiến nghị do nhà thầu tham dự thầu gửi
        đơn kiến nghị có chữ ký của người đại diện hợp pháp
        kiến nghị gửi đến đúng người có trách nhiệm giải quyết và trong thời hạn quy định
        nội dung kiến nghị chưa được khởi kiện ra tòa án
        """,
        """
        [0] Nhà thầu được gửi kiến nghị về kết quả lựa chọn nhà thầu trong thời hạn bao nhiêu ngày theo {ref}?
        [1] Chi phí giải quyết kiến nghị {pkg} là bao nhiêu?
        """,
    ),
    topic(
        "thanh_tra",
        "quan_ly",
        """
        Thanh tra, kiểm tra hoạt động đấu thầu
        Giám sát, theo dõi hoạt động đấu thầu
        """,
        """
        Cơ quan quản lý nhà nước về đấu thầu tổ chức kiểm tra định kỳ hoặc đột xuất hoạt động lựa chọn nhà \
            thầu thực hiện {sector} {scope}.
        Kiểm tra định kỳ được thực hiện tối thiểu {count} lần trong năm đối với các chủ đầu tư có nhiều gói \
            thầu quy mô lớn.
        Thời gian kiểm tra tại đơn vị không quá {days} ngày; kết luận kiểm tra được gửi đến đơn vị được \
            kiểm tra và công khai trên Hệ thống mạng đấu thầu quốc gia.
        Nội dung thanh tra, kiểm tra gồm:
        """,
        """
        việc ban hành văn bản hướng dẫn về đấu thầu
        việc lập, thẩm định và phê duyệt kế hoạch lựa chọn nhà thầu
        việc tổ chức lựa chọn nhà thầu và ký kết hợp đồng
        việc đăng tải thông tin trên Hệ thống mạng đấu thầu quốc gia
        việc thực hiện kết luận thanh tra, kiểm tra trước đó
        """,
        """
        [0] Kiểm tra hoạt động đấu thầu {pkg} được thực hiện mấy lần trong năm?
        [0] Nội dung thanh tra, kiểm tra hoạt động đấu thầu theo {ref} gồm những gì?
        [1] Việc giám sát, theo dõi hoạt động đấu thầu {pkg} được thực hiện như thế nào?
        """,
    ),
    topic(
        "xu_ly_vi_pham",
        "quan_ly",
        """
        Xử lý vi phạm trong hoạt động đấu thầu
        Cấm tham gia hoạt động đấu thầu
        Mức phạt tiền đối với hành vi vi phạm về lựa chọn nhà thầu
        """,
        """
        Tổ chức, cá nhân vi phạm pháp luật về đấu thầu khi thực hiện {sector} {scope} tùy theo tính chất, mức độ vi \
            phạm bị xử phạt vi phạm hành chính, cấm tham gia hoạt động đấu thầu hoặc truy cứu trách nhiệm \
            hình sự.
        Phạt tiền từ {amount} đối với hành vi không đăng tải thông tin về đấu thầu theo quy định.
        Nhà thầu vi phạm bị cấm tham gia hoạt động đấu thầu từ {months} tháng đến 5 năm; quyết định cấm \
            được đăng tải trong thời hạn {days} ngày.
        Hình thức xử phạt bổ sung gồm:
        """,
        """
        công khai tên nhà thầu vi phạm trên Hệ thống mạng đấu thầu quốc gia
        buộc nộp lại số lợi bất hợp pháp có được do thực hiện hành vi vi phạm
        đình chỉ hoạt động đấu thầu có thời hạn
        tước quyền sử dụng chứng chỉ hành nghề hoạt động đấu thầu
        """,
        """
        [1] Nhà thầu vi phạm bị cấm tham gia hoạt động đấu thầu bao lâu theo {ref}?
        [2] Mức phạt tiền đối với hành vi không đăng tải thông tin về đấu thầu là bao nhiêu?
        """,
    ),
    topic(
        "trach_nhiem",
        "quan_ly",
        """
        Trách nhiệm của chủ đầu tư
        Trách nhiệm của tổ chuyên gia
        Trách nhiệm của người có thẩm quyền
        """,
        """
        Chủ đầu tư {sector} {scope} chịu trách nhiệm phê duyệt hồ sơ mời thầu, danh sách nhà thầu đáp ứng yêu cầu \
            kỹ thuật và kết quả lựa chọn nhà thầu.
        Thành viên tổ chuyên gia phải có chứng chỉ đào tạo về đấu thầu và tối thiểu {count} năm công tác \
            trong lĩnh vực liên quan.
        Người có thẩm quyền chịu trách nhiệm trước pháp luật về quyết định của mình; trường hợp chậm phê \
            duyệt quá {days} ngày phải báo cáo {boss}.
        Trách nhiệm cụ thể bao gồm:
        """,
        """
        bảo đảm trung thực, khách quan, công bằng trong quá trình lựa chọn nhà thầu
        bảo mật tài liệu trong quá trình lựa chọn nhà thầu
        ký cam kết không xung đột lợi ích
        bồi thường thiệt hại do lỗi của mình gây ra
        cung cấp thông tin cho cơ quan thanh tra, kiểm tra
        """,
        """
        [0] Chủ đầu tư {pkg} có trách nhiệm gì trong lựa chọn nhà thầu?
        [1] Thành viên tổ chuyên gia phải có bao nhiêu năm kinh nghiệm theo {ref}?
        [2] Người có thẩm quyền chậm phê duyệt kết quả thì phải báo cáo ai theo {ref}?
        """,
    ),
    topic(
        "chung_chi",
        "quan_ly",
        """
        Chứng chỉ hành nghề hoạt động đấu thầu
        Đào tạo, bồi dưỡng về đấu thầu
        """,
        """
        Cá nhân tham gia tổ chuyên gia {sector} {scope} phải có chứng chỉ đào tạo về đấu thầu cơ bản; cá nhân thuộc \
            tổ chức đấu thầu chuyên nghiệp phải có chứng chỉ hành nghề hoạt động đấu thầu.
        Khóa đào tạo đấu thầu cơ bản có thời lượng tối thiểu {count} ngày; học viên phải tham dự ít nhất \
            {pct2} thời lượng và đạt bài kiểm tra.
        Chứng chỉ hành nghề hoạt động đấu thầu có hiệu lực {months} tháng và được cấp qua Hệ thống mạng đấu \
            thầu quốc gia.
        Điều kiện cấp chứng chỉ hành nghề gồm:
        """,
        """
        có trình độ từ đại học trở lên
        có chứng chỉ đào tạo về đấu thầu cơ bản
        có tối thiểu 3 năm tham gia hoạt động đấu thầu
        đạt kỳ thi sát hạch do cơ quan có thẩm quyền tổ chức
        """,
        """
        [0] Chứng chỉ hành nghề hoạt động đấu thầu có hiệu lực bao nhiêu tháng theo {ref}?
        [0] Điều kiện cấp chứng chỉ hành nghề đấu thầu là gì?
        [1] Khóa đào tạo đấu thầu cơ bản kéo dài tối thiểu bao nhiêu ngày?
        """,
    ),
    topic(
        "bao_cao",
        "quan_ly",
        """
        Báo cáo tình hình thực hiện công tác đấu thầu
        Cơ sở dữ liệu nhà thầu
        """,
        """
        Chủ đầu tư {sector} {scope} báo cáo tình hình thực hiện công tác đấu thầu định kỳ hằng năm trước \
            ngày {day} tháng 1 của năm sau.
        Báo cáo phản ánh tỷ lệ tiết kiệm qua đấu thầu, bình quân đạt {pct2} giá gói thầu, và số lượng gói \
            thầu tổ chức qua mạng.
        Cơ sở dữ liệu nhà thầu được cập nhật trên Hệ thống mạng đấu thầu quốc gia trong thời hạn {count} \
            ngày kể từ ngày có thông tin thay đổi.
        Nội dung báo cáo gồm:
        """,
        """
        tổng số gói thầu và tổng giá trúng thầu
        tỷ lệ tiết kiệm qua đấu thầu
        số gói thầu áp dụng chỉ định thầu
        kết quả đánh giá thực hiện hợp đồng của nhà thầu
        kiến nghị, đề xuất hoàn thiện chính sách
        """,
        """
        [0] Báo cáo tình hình thực hiện công tác đấu thầu {pkg} phải gửi trước ngày nào?
        [1] Cơ sở dữ liệu nhà thầu được cập nhật trong bao nhiêu ngày theo {ref}?
        """,
    ),
    topic(
        "hieu_luc",
        "thi_hanh",
        """
        Hiệu lực thi hành
        Quy định chuyển tiếp
        Tổ chức thực hiện
        """,
        """
        {self} có hiệu lực thi hành kể từ ngày {day} tháng {month} năm {year}.
        Đối với {sector} {scope} đã phát hành hồ sơ mời thầu trước ngày {self} có hiệu lực thì tiếp tục thực hiện \
            theo quy định tại thời điểm phát hành.
        Hợp đồng đã ký trước ngày {self} có hiệu lực thi hành tiếp tục thực hiện theo nội dung hợp đồng đã ký.
        Trong quá trình thực hiện, nếu có vướng mắc, các cơ quan, đơn vị phản ánh về {org} để tổng hợp, báo \
            cáo {boss} xem xét, giải quyết.
        Các cơ quan sau đây chịu trách nhiệm thi hành:
        """,
        """
        thủ trưởng các cơ quan chuyên môn có liên quan
        chủ đầu tư, bên mời thầu các dự án sử dụng vốn nhà nước
        các tổ chức, cá nhân tham gia hoạt động đấu thầu
        """,
        """
        [0] {ref} có hiệu lực từ ngày nào?
        [1] {pkg} đã phát hành hồ sơ mời thầu trước khi {ref} có hiệu lực thì xử lý thế nào?
        [2] Cơ quan nào chịu trách nhiệm thi hành {ref}?
        """,
    ),
)
