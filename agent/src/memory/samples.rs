//! Real text in the eight languages: articles 1, 3, 4 and 5 of the Universal Declaration of
//! Human Rights, for tests and the language-detection measurement.

use super::Language;

/// The articles, one string per language.
pub const UDHR: &[(Language, &str)] = &[
    (
        Language::En,
        "All human beings are born free and equal in dignity and rights. They are endowed with \
         reason and conscience and should act towards one another in a spirit of brotherhood. \
         Everyone has the right to life, liberty and security of person. No one shall be held \
         in slavery or servitude; slavery and the slave trade shall be prohibited in all their \
         forms. No one shall be subjected to torture or to cruel, inhuman or degrading \
         treatment or punishment.",
    ),
    (
        Language::Fr,
        "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont \
         doués de raison et de conscience et doivent agir les uns envers les autres dans un \
         esprit de fraternité. Tout individu a droit à la vie, à la liberté et à la sûreté de \
         sa personne. Nul ne sera tenu en esclavage ni en servitude; l'esclavage et la traite \
         des esclaves sont interdits sous toutes leurs formes. Nul ne sera soumis à la \
         torture, ni à des peines ou traitements cruels, inhumains ou dégradants.",
    ),
    (
        Language::De,
        "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft \
         und Gewissen begabt und sollen einander im Geist der Brüderlichkeit begegnen. Jeder \
         hat das Recht auf Leben, Freiheit und Sicherheit der Person. Niemand darf in \
         Sklaverei oder Leibeigenschaft gehalten werden; Sklaverei und Sklavenhandel sind in \
         allen ihren Formen verboten. Niemand darf der Folter oder grausamer, unmenschlicher \
         oder erniedrigender Behandlung oder Strafe unterworfen werden.",
    ),
    (
        Language::Hi,
        "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है। \
         उन्हें बुद्धि और अन्तरात्मा की देन प्राप्त है और परस्पर उन्हें भाईचारे के भाव से बर्ताव करना \
         चाहिए। प्रत्येक व्यक्ति को जीवन, स्वाधीनता और वैयक्तिक सुरक्षा का अधिकार है। कोई भी गुलामी \
         या दासता की हालत में न रखा जाएगा, गुलामी-प्रथा और गुलामों का व्यापार अपने सभी रूपों में \
         निषिद्ध होगा। किसी को भी शारीरिक यातना न दी जाएगी और न किसी के भी प्रति निर्दय, \
         अमानुषिक या अपमानजनक व्यवहार होगा।",
    ),
    (
        Language::It,
        "Tutti gli esseri umani nascono liberi ed eguali in dignità e diritti. Essi sono dotati \
         di ragione e di coscienza e devono agire gli uni verso gli altri in spirito di \
         fratellanza. Ogni individuo ha diritto alla vita, alla libertà ed alla sicurezza della \
         propria persona. Nessun individuo potrà essere tenuto in stato di schiavitù o di \
         servitù; la schiavitù e la tratta degli schiavi saranno proibite sotto qualsiasi \
         forma. Nessun individuo potrà essere sottoposto a tortura o a trattamento o a \
         punizione crudeli, inumani o degradanti.",
    ),
    (
        Language::Pt,
        "Todos os seres humanos nascem livres e iguais em dignidade e em direitos. Dotados de \
         razão e de consciência, devem agir uns para com os outros em espírito de \
         fraternidade. Todo ser humano tem direito à vida, à liberdade e à segurança pessoal. \
         Ninguém será mantido em escravatura ou em servidão; a escravatura e o trato dos \
         escravos, sob todas as formas, são proibidos. Ninguém será submetido a tortura nem a \
         penas ou tratamentos cruéis, desumanos ou degradantes.",
    ),
    (
        Language::Es,
        "Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como \
         están de razón y conciencia, deben comportarse fraternalmente los unos con los otros. \
         Todo individuo tiene derecho a la vida, a la libertad y a la seguridad de su persona. \
         Nadie estará sometido a esclavitud ni a servidumbre, la esclavitud y la trata de \
         esclavos están prohibidas en todas sus formas. Nadie será sometido a torturas ni a \
         penas o tratos crueles, inhumanos o degradantes.",
    ),
    (
        Language::Th,
        "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ ต่างมีเหตุผลและมโนธรรม \
         และควรปฏิบัติต่อกันด้วยเจตนารมณ์แห่งภราดรภาพ ทุกคนมีสิทธิในการมีชีวิต เสรีภาพ \
         และความมั่นคงแห่งบุคคล บุคคลใดจะถูกยึดตัวไว้เป็นทาส หรืออยู่ในภาวะจำยอมไม่ได้ \
         ความเป็นทาสและการค้าทาสเป็นห้ามขาดทุกรูปแบบ บุคคลใดจะถูกทรมาน \
         หรือได้รับการปฏิบัติหรือการลงทัณฑ์ที่โหดร้ายไร้มนุษยธรรมหรือต่ำช้าไม่ได้",
    ),
];
